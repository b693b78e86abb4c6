import { bootShell } from "/static/js/shell.js";

bootShell().catch(() => {});
