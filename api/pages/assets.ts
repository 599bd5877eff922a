import { createRequire } from 'node:module';
import path from 'node:path';
import { Router } from 'express';
import { setPageHeaders } from './security.js';

const require = createRequire(import.meta.url);

/** Files served from installed packages: exactly these, no directory listing, no source maps. */
const FROM_PACKAGES: Record<string, { file: () => string; type: string }> = {
  'pico.min.css': { file: () => require.resolve('@picocss/pico/css/pico.min.css'), type: 'text/css' },
  // chart.js exports no package.json; its UMD build sits beside the CommonJS entry.
  'chart.umd.min.js': { file: () => path.join(path.dirname(require.resolve('chart.js')), 'chart.umd.min.js'), type: 'application/javascript' },
};

/** Our own small CSS and scripts: strings here, so the build (TypeScript only) carries them. */
const OWN: Record<string, { body: string; type: string }> = {
  'app.css': {
    type: 'text/css',
    body: `.skip{position:absolute;left:-999px;top:0;padding:.5rem 1rem;background:var(--pico-primary-background);color:var(--pico-primary-inverse)}
.skip:focus{left:0;z-index:10}
form.inline{margin:0}
form.inline button{margin:0;padding:.3rem .8rem}
.table-wrap{overflow-x:auto}
.facts{display:grid;grid-template-columns:minmax(7rem,max-content) 1fr;gap:.35rem 1rem;margin:0}
.facts dt{font-weight:600}
.facts dd{margin:0;overflow-wrap:anywhere}
.prose{white-space:pre-wrap}
.risk{display:inline-block;padding:0 .5rem;border-radius:.3rem;font-size:.85em;font-weight:600;border:1px solid currentColor}
.risk-low{color:#1d6b35}.risk-medium{color:#7a5300}.risk-high{color:#a33a00}.risk-privileged{color:#fff;background:#9b1c1c;border-color:#9b1c1c}
.error,.sod li{color:#9b1c1c}
@media (prefers-color-scheme:dark){.risk-low{color:#7fd39a}.risk-medium{color:#f0c36b}.risk-high{color:#ff9e6b}.error,.sod li{color:#ff9d9d}}
.countdown{font-size:2rem;font-variant-numeric:tabular-nums}
@media (max-width:576px){.facts{grid-template-columns:1fr}.facts dt{margin-top:.5rem}}
`,
  },
  // Fed by the JSON endpoint named in the canvas's data-src: no data and no code inline in the page.
  'kpis.js': {
    type: 'application/javascript',
    body: `(() => {
  const canvas = document.getElementById('kpi-chart');
  if (!canvas || !window.Chart) return;
  fetch(canvas.dataset.src, { credentials: 'same-origin', headers: { accept: 'application/json' } })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error('HTTP ' + r.status))))
    .then((d) => {
      const s = (ms) => (ms == null ? null : Math.round(ms) / 1000);
      new window.Chart(canvas, {
        type: 'bar',
        data: {
          labels: d.series.map((x) => x.label),
          datasets: [
            { label: 'p50 (s)', data: d.series.map((x) => s(x.p50Ms)), backgroundColor: '#1f6feb' },
            { label: 'p95 (s)', data: d.series.map((x) => s(x.p95Ms)), backgroundColor: '#9b1c1c' },
          ],
        },
        options: { responsive: true, maintainAspectRatio: false, animation: false, scales: { y: { beginAtZero: true } } },
      });
      canvas.dataset.rendered = 'true';
    })
    .catch(() => { canvas.dataset.rendered = 'error'; });
})();
`,
  },
  // The lease countdown: the end time is a data attribute on the element, rendered by the server.
  'countdown.js': {
    type: 'application/javascript',
    body: `(() => {
  for (const el of document.querySelectorAll('[data-countdown-to]')) {
    const end = Date.parse(el.dataset.countdownTo);
    const tick = () => {
      const left = Math.max(0, Math.round((end - Date.now()) / 1000));
      const h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      el.textContent = (h ? h + ':' : '') + String(m).padStart(2, '0') + ':' + String(s).padStart(2, '0');
      if (left === 0) { el.dataset.ended = 'true'; clearInterval(timer); }
    };
    const timer = setInterval(tick, 1000);
    tick();
  }
})();
`,
  },
};

/** GET /assets/:file — the pages' CSS and scripts, same origin, so the CSP can say 'self'. */
export function assetRoutes(): Router {
  const r = Router();
  r.get('/assets/:file', (req, res, next) => {
    const name = req.params.file;
    const own = Object.hasOwn(OWN, name) ? OWN[name] : undefined;
    const pkg = Object.hasOwn(FROM_PACKAGES, name) ? FROM_PACKAGES[name] : undefined;
    if (own) return void setPageHeaders(res, { cache: true }).type(own.type).send(own.body);
    if (pkg) return void setPageHeaders(res, { cache: true }).type(pkg.type).sendFile(pkg.file());
    next();
  });
  return r;
}
