// The browser side of web/web-helper.mjs: loads the libraries' dist files from /lib/ with script
// tags, initialises them through libs.mjs and exposes window.crossdl.start(json) and
// window.crossdl.handle(json) for page.evaluate. Both take and return JSON strings (a reply is
// {"ok":true,...} or {"ok":false,"error":...,"unsupported":true?}), so that large base64 tensors
// cross the DevTools/BiDi channel as one string.
import { initLibs } from './libs.mjs';
import { handle } from './harness.mjs';

const SCRIPTS = {
  'tfjs': ['/lib/tfjs/tf.min.js'],
  'tfjs-wasm': ['/lib/tfjs/tf.min.js', '/lib/tfjs-wasm/tf-backend-wasm.min.js'],
  'tfjs-webgpu': ['/lib/tfjs/tf.min.js', '/lib/tfjs-webgpu/tf-backend-webgpu.min.js'],
  'ort': ['/lib/ort/ort.all.min.js'],
  'tflite': ['/lib/tfjs/tf.min.js', '/lib/tflite/tf-tflite.min.js'],
};

const loadedScripts = new Map();

function loadScript(src) {
  if (!loadedScripts.has(src)) {
    loadedScripts.set(src, new Promise((ok, bad) => {
      const s = document.createElement('script');
      s.src = src;
      s.onload = () => ok();
      s.onerror = () => bad(new Error(`cannot load ${src}`));
      document.head.appendChild(s);
    }));
  }
  return loadedScripts.get(src);
}

const GLOBALS = {
  'tfjs': () => window.tf,
  'tfjs-wasm': () => window.tf && window.tf.wasm,
  // tf-backend-webgpu's UMD build adds its exports to the tf namespace itself.
  'tfjs-webgpu': () => window.tf && window.tf.findBackendFactory('webgpu') && window.tf,
  'ort': () => window.ort,
  'tflite': () => window.tflite,
};

async function load(name) {
  if (!SCRIPTS[name]) throw new Error(`no library '${name}' in the page`);
  for (const src of SCRIPTS[name]) await loadScript(src);
  const lib = GLOBALS[name]();
  if (!lib) throw new Error(`${SCRIPTS[name].join(', ')} loaded but defined no ${name} global`);
  return lib;
}

async function fetchBytes(file) {
  if (typeof file !== 'string' || file === '' || file.startsWith('/') || file.split('/').includes('..'))
    throw new Error(`artefact file '${file}' is not a relative path inside the artefact folder`);
  const url = '/artefact/' + file.split('/').map(encodeURIComponent).join('/');
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot read artefact file ${file}: HTTP ${res.status} ${(await res.text()).trim()}`);
  return new Uint8Array(await res.arrayBuffer());
}

function browserName() {
  const ua = navigator.userAgent;
  const m = /Firefox\/([\d.]+)/.exec(ua) || /Chrom(?:e|ium)\/([\d.]+)/.exec(ua);
  return m ? `${ua.includes('Firefox') ? 'Firefox' : 'Chromium'} ${m[1]}` : ua;
}

let libs = null;

function failure(e) {
  const reply = { ok: false, error: String(e && e.message ? e.message : e) };
  if (e && e.unsupported) reply.unsupported = true;
  return JSON.stringify(reply);
}

window.crossdl = {
  ready: true,

  async start(json) {
    try {
      if (libs) throw new Error('start: this page has already started');
      const args = JSON.parse(json);
      const origin = location.origin;
      const host = {
        platform: /Firefox\//.test(navigator.userAgent) ? 'firefox' : 'chromium',
        browser: typeof args.browser === 'string' ? args.browser : browserName(),
        load,
        wasmPaths: { tfjs: `${origin}/lib/tfjs-wasm/`, ort: `${origin}/lib/ort/`, tflite: `${origin}/lib/tflite/` },
        fetchBytes,
      };
      const r = await initLibs(host, args);
      libs = r.libs;
      return JSON.stringify({ ok: true, ...r.reply });
    } catch (e) {
      return failure(e);
    }
  },

  async handle(json) {
    try {
      const req = JSON.parse(json);
      return JSON.stringify({ ok: true, ...(await handle(libs, req)) });
    } catch (e) {
      return failure(e);
    }
  },
};
