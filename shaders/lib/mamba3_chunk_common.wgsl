// Mamba-3's chunked scan: the workgroup-memory layout of a chunk's tiles and the phases that
// depend only on the chunk's own tokens (and their angles phi, already in the tiles), shared by
// mamba3_forward.wgsl (mamba3_chunk_scan: one workgroup walks a head's chunks in order) and
// mamba3_chunked.wgsl (the chunks of a head side by side). The includer declares p: Params, pre,
// Bn, Cn, sh: array<f32, WS> and CWG (its chunk kernels' workgroup size), and includes lib/mamba3_params.wgsl (kq_rotated's pieces).
// Tiles (floats of sh, L = CHUNK tokens of R = RANK ranks): k [L R, N] at CK | q [L R, N] at CQ |
// M [L R, L R] at CM | phi [L, S] at CPH | 7 scalar rows [L] at CS (cp, wl, dw, shn: phase 3;
// the tokens' alpha, gamma, DT - gamma: token_rows) | k_prev [R, N] at CKP.
const MAX_L = 32u;
const MAX_LR = 32u;
override CHUNK: u32 = 8u;
override RANK: u32 = 1u;   // = p.R, as a constant so the rank loops of the hot loop unroll (SISO: 1)

fn CK() -> u32 { return 0u; }
fn CQ() -> u32 { return CHUNK * RANK * p.N; }
fn CM() -> u32 { return 2u * CHUNK * RANK * p.N; }
fn CPH() -> u32 { return CM() + CHUNK * RANK * CHUNK * RANK; }
fn CS() -> u32 { return CPH() + CHUNK * p.S; }
fn CKP() -> u32 { return CS() + 7u * CHUNK; }


// (k, q) of dim n of rank rk at token row `row`, head h (group g): bias added, then the rotation by
// phi_i = sh[phb + i] of pair (2i, 2i+1) (SISO) or (i, i + N/2) (MIMO), i < S; other dims pass through.
fn kq_rotated(row: u32, h: u32, g: u32, rk: u32, n: u32, phb: u32) -> vec2<f32> {
  let N = p.N;
  let RN = p.R * N;
  let bo = p.b_off + row * p.b_str + (rk * p.G + g) * N;
  let co = p.c_off + row * p.c_str + (rk * p.G + g) * N;
  let bb = p.par + (h * p.R + rk) * N;
  let cb = p.par + p.H * RN + (h * p.R + rk) * N;
  let kb = Bn[bo + n] + pre[bb + n];
  let qb = Cn[co + n] + pre[cb + n];
  let q = pair_of(n, N);
  if (!q.rot) { return vec2<f32>(kb, qb); }
  let kp = Bn[bo + q.m] + pre[bb + q.m];
  let qp = Cn[co + q.m] + pre[cb + q.m];
  return rotated(kb, qb, kp, qp, sin_cos(sh[phb + q.i]), q.first);
}

// The MIMO up-projection weight mimo_x[h, r, pp] (1 for SISO)
fn mx(h: u32, r: u32, pp: u32) -> f32 {
  if (!has(MIMO)) { return 1.0; }
  return pre[p.par + 2u * p.H * p.R * p.N + p.H + (h * p.R + r) * p.P + pp];
}

// (DT - gamma) = beta / alpha of token row r, head h: the weight the trapezoid gives v_{r-1}
// k_{r-1}^T at step r, before alpha_r's decay
fn dt_less_gamma(r: u32, h: u32) -> f32 { return pre[r * p.pw + h] - pre[r * p.pw + 3u * p.H + h]; }

// (1) the angle phi_i after token row `row` (pre's row offset) of head h, from phi before it:
// phi + theta_i DT_h, wrapped (the same sum in the in-order and the side-by-side scans)
fn angle_step(ph: f32, row: u32, h: u32, i: u32) -> f32 {
  return wrap_angle(ph + pre[row + 4u * p.H + i] * pre[row + h]);
}

// (2) k_{t,r}, q_{t,r} of the chunk's Lc tokens from t0 rotated into the k and q tiles, (t, r, n)
// over threads; phi of token t at sh[CPH + t S ..].
fn chunk_rotate(b: u32, h: u32, g: u32, t0: u32, Lc: u32, lid: u32) {
  let RN = RANK * p.N;
  for (var e = lid; e < Lc * RN; e += CWG) {
    let t = e / RN;
    let kq = kq_rotated(b * p.T + t0 + t, h, g, (e % RN) / p.N, e % p.N, CPH() + t * p.S);
    sh[CK() + e] = kq.x;
    sh[CQ() + e] = kq.y;
  }
}

// The scalar rows from row base cs (L = CHUNK floats each): cp | wl | dw | shn | alpha | gamma |
// DT - gamma
fn ROW_CP(cs: u32) -> u32 { return cs; }
fn ROW_WL(cs: u32) -> u32 { return cs + CHUNK; }
fn ROW_DW(cs: u32) -> u32 { return cs + 2u * CHUNK; }
fn ROW_SHN(cs: u32) -> u32 { return cs + 3u * CHUNK; }
fn ROW_AL(cs: u32) -> u32 { return cs + 4u * CHUNK; }
fn ROW_GA(cs: u32) -> u32 { return cs + 5u * CHUNK; }
fn ROW_DG(cs: u32) -> u32 { return cs + 6u * CHUNK; }

// (3a) the chunk's Lc tokens' alpha, gamma and DT - gamma into the rows at cs, side by side (a
// barrier before chunk_scalars reads them: one memory wait, not one per token in thread 0)
fn token_rows(b: u32, h: u32, t0: u32, Lc: u32, lid: u32, cs: u32) {
  for (var t = lid; t < Lc; t += CWG) {
    let r = b * p.T + t0 + t;
    sh[ROW_AL(cs) + t] = pre[r * p.pw + p.H + h];
    sh[ROW_GA(cs) + t] = pre[r * p.pw + 3u * p.H + h];
    sh[ROW_DG(cs) + t] = dt_less_gamma(r, h);
  }
}

// (3b) thread 0: the chunk's scalar rows (fixed order) from token_rows': cp_t = prod_{u <= t}
// alpha_u, wl_t = gamma_t + shn_t, dw_t = wl_t prod_{u > t} alpha_u (token t's weight in the
// chunk's final state), shn_t = (DT - gamma)_{t+1} (0 for the chunk's last token).
fn chunk_scalars(Lc: u32, lid: u32, cs: u32) {
  if (lid != 0u) { return; }
  var cpv = 1.0;
  for (var t = 0u; t < Lc; t++) {
    cpv *= sh[ROW_AL(cs) + t];
    sh[ROW_CP(cs) + t] = cpv;
    var shn = 0.0;
    if (t + 1u < Lc) { shn = sh[ROW_DG(cs) + t + 1u]; }
    sh[ROW_WL(cs) + t] = sh[ROW_GA(cs) + t] + shn;
    sh[ROW_SHN(cs) + t] = shn;
  }
  var dec = 1.0;                  // dec(Lc-1, s), s from the end
  for (var k = 0u; k < Lc; k++) {
    let s = Lc - 1u - k;
    sh[ROW_DW(cs) + s] = dec * sh[ROW_WL(cs) + s];
    dec *= sh[ROW_AL(cs) + s];
  }
}

// (4) M[(t,u), (s,r)], s <= t (rows / columns (token, rank): i = t R + u, j = s R + r)
fn chunk_m(Lc: u32, lid: u32) {
  let R = RANK;
  let N = p.N;
  let L = CHUNK;
  let LR = L * R;
  let LcR = Lc * R;
  for (var e = lid; e < LcR * LcR; e += CWG) {
    let i = e / LcR;
    let j = e % LcR;
    let t = i / R;
    let s = j / R;
    var m = 0.0;
    if (s <= t) {
      var dot = 0.0;
      for (var n = 0u; n < N; n++) { dot += sh[CQ() + i * N + n] * sh[CK() + j * N + n]; }
      var dec = 1.0;
      for (var r = s + 1u; r <= t; r++) { dec *= sh[ROW_AL(CS()) + r]; }
      m = dot * dec * sh[ROW_WL(CS()) + s];
      if (s == t) { m -= dot * sh[ROW_SHN(CS()) + t]; }
    }
    sh[CM() + i * LR + j] = m;
  }
}
