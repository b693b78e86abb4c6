"""A stand-in GPUDevice for running the npm engine's (@seanhogg/builderforce-memory-engine) model
code under node without a GPU, for its MBJS reader/writer (`loadWeights`/`exportWeights`): buffers
are ArrayBuffers, writeBuffer and copyBufferToBuffer copy bytes, kernels are no-ops, pipelines are
ignored. Pasted into the node scripts of tests/unit/test_mbjs.py and test_mbjs_attention.py."""

FAKE_DEVICE_JS = r"""
class Buf {
  constructor(size) { this.size = size; this.data = new ArrayBuffer(size); }
  getMappedRange() { return this.data; }
  unmap() {} destroy() {}
  async mapAsync() {}
}
const device = {
  lost: new Promise(() => {}),
  createBuffer: ({ size }) => new Buf(size),
  createShaderModule: () => ({}),
  createComputePipeline: () => ({ getBindGroupLayout: () => ({}) }),
  createBindGroup: () => ({}),
  createCommandEncoder: () => ({
    copyBufferToBuffer(src, so, dst, doff, n) {
      new Uint8Array(dst.data, doff, n).set(new Uint8Array(src.data, so, n));
    },
    beginComputePass: () => ({
      setPipeline() {}, setBindGroup() {}, dispatchWorkgroups() {}, end() {},
    }),
    finish: () => ({}),
  }),
  queue: {
    submit() {},
    writeBuffer(buf, off, data, dataOff, size) {
      new Uint8Array(buf.data, off, size).set(new Uint8Array(data, dataOff, size));
    },
  },
};
"""
