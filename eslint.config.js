import tseslint from 'typescript-eslint';

/*
 * Layers: which folder may import which. docs/architecture.md#2-layers has the picture and the
 * table; test/unit/layering.test.ts lints a wrong import for every zone and expects an error, so
 * a zone that stops biting fails the build.
 *
 * no-restricted-imports sees a specifier as written, and a relative specifier names a folder only
 * once it climbs out of the importer's own folder. So a zone is a list of regexes over `../…`:
 * UP is "one or more ../", enough wherever the target is another top-level folder. Where the
 * target is the importer's own top folder (activities/domain → activities/*.ts) the climb has to
 * be counted, so that zone is written once per depth.
 *
 * A type-only import is erased at compile time, so it couples names, not processes: `types: true`
 * allows `import type` where that is fine. (no-import-type-side-effects below keeps
 * `import { type X }`, which verbatimModuleSyntax compiles to a module-loading `import {}`, out.)
 */
const UP = '^(\\.\\./)+';
const upExactly = (n) => `^(\\.\\./){${n}}`;

/** One restricted pattern. `types: true` lets `import type` through. */
const refuse = (regex, message, { types = false } = {}) => ({ regex, message, allowTypeImports: types });

/** A zone: these files, these refused imports. Zones are disjoint (flat config replaces a rule's options, it does not merge them). */
const zone = (files, patterns, ignores = []) => ({
  files,
  ignores,
  rules: { '@typescript-eslint/no-restricted-imports': ['error', { patterns }] },
});

// Fakes and helpers live under test/, and the build leaves test/ out: product code importing it
// would work in the suite and break in production.
const noTests = refuse(`${UP}test/`, 'product code must not import test/: fakes and helpers live there, and the build leaves test/ out');

// temporal/ holds two kinds of module. The composition root wires the process (API, worker,
// database, dev server, demo catalog) and may import anything. Everything else in temporal/ is
// a platform module used by api/ and activities/ alike.
const compositionRoot = ['runtime', 'worker', 'worker-main', 'demo-catalog', 'build'];
// Of the platform modules, these three are leaves: the one config loader, the one logger and the
// one payload codec. activities/ may use them precisely because they import nothing of ours.
const platformLeaves = ['config', 'logger', 'codec'];
const temporalFile = (name) => `temporal/${name}.ts`;

// ---- activities/: runs only in the worker.
const activityRules = [
  // The API calls down into activities/domain; an import the other way would load HTTP code into
  // the worker and make a cycle between the two processes' code.
  refuse(`${UP}api/`, 'activities/ never import api/: the API builds on activities/domain, not the other way round'),
  // Everything in temporal/ but the leaves imports activities (runtime, worker) or talks to the
  // cluster (client, schedules); an activity needing that has its dependency passed in instead.
  refuse(
    `${UP}temporal/(?!(${platformLeaves.join('|')})\\.js$)`,
    `activities/ may import from temporal/ only the platform leaves (${platformLeaves.join(', ')}): the rest wires the worker that runs activities, so dependencies come in through the factory's deps`,
  ),
  // Workflow code is written for the sandbox: its runtime calls throw outside a workflow. Its
  // message and input types are shared, so type imports are fine.
  refuse(`${UP}workflows/`, 'activities/ may import workflows/ only with `import type`: workflow code runs in the sandbox', { types: true }),
  noTests,
];
// The factories (activities/*.ts) compose domain modules and connectors into activities. Domain
// and connectors importing a factory would point the arrow both ways, and the API, which may use
// activities/domain, would pull the worker's activities in with it.
const noFactories = (depth) =>
  refuse(
    `${upExactly(depth)}[^/]+\\.js$`,
    'activities/domain and activities/connectors must not import the activity factories (activities/*.ts): the factories build on them, not the other way round',
  );
const activityZones = [1, 2, 3, 4].map((depth) =>
  zone(
    ['domain', 'connectors'].map((dir) => `activities/${dir}/${'*/'.repeat(depth - 1)}*.ts`),
    [...activityRules, noFactories(depth)],
  ),
);

// ---- api/: runs in the API process, which starts workflows but never runs activities.
const apiRules = [
  refuse(
    `${UP}activities/[^/]+\\.js$`,
    'api/ must not import the activity factories (activities/*.ts): they run in the worker; the API uses activities/domain/ and starts workflows by reference',
  ),
  // registry.ts carries the connector kinds and the secret prefix the API validates systems with
  // (service-desk/registry.ts: the desk kinds and their config schemas); the connectors
  // themselves talk to targets, which only the worker does.
  refuse(
    `${UP}activities/connectors/(?!(service-desk/)?registry\\.js$)`,
    'api/ may import from activities/connectors/ only registry.ts and service-desk/registry.ts (kinds, config schemas, secret prefix) and types: connector code talks to targets and desks, which only the worker does',
    { types: true },
  ),
  noTests,
];
const notFromApi = (modules, why) => refuse(`${UP}temporal/(${modules.join('|')})\\.js$`, why);
// createApp(deps) is composed by temporal/runtime.ts; a route reaching back into the composition
// root would be a cycle, and could start a worker or a dev server inside a request.
const apiNoCompositionRoot = notFromApi(
  [...compositionRoot, 'dev-server', 'ensure-cli'],
  'api/ must not import the composition root or the dev server (temporal/runtime, worker, worker-main, demo-catalog, dev-server): the API is composed by them; only the entry points api/server.ts and api/cli.ts may import temporal/runtime.ts',
);
// The entry points start the process, so they may import temporal/runtime.ts, and only that.
const apiEntryPoints = ['api/server.ts', 'api/cli.ts'];
const entryOnlyRuntime = notFromApi(
  [...compositionRoot.filter((m) => m !== 'runtime'), 'dev-server', 'ensure-cli'],
  'the API entry points start the process through temporal/runtime.ts (startRuntime), not by wiring its parts themselves',
);

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', '.dist-build/**', '.data/**', '.cache/**', 'db/migrations/**', 'coverage/**'] },
  {
    files: ['**/*.ts'],
    languageOptions: { parser: tseslint.parser },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'off',
      // Under verbatimModuleSyntax `import { type X } from 'm'` compiles to `import {} from 'm'`,
      // which still loads m: only `import type` is erased, and only it may cross a zone.
      '@typescript-eslint/no-import-type-side-effects': 'error',
    },
  },

  // ---- db/: schema, client, migrations, embedded PGlite. Below every other layer, so drizzle-kit
  // and `npm run db:migrate` load it alone; nothing of ours, not even types.
  zone(['db/**/*.ts'], [refuse(`${UP}(activities|api|temporal|workflows|test)/`, 'db/ imports nothing of ours: it sits below every other layer (drizzle-kit and db:migrate load it alone)')]),

  // ---- workflows/: Temporal's deterministic sandbox. Only @temporalio/workflow, zod (pure and
  // deterministic: the message schemas the workflows and the API share) and other workflow files
  // at run time; anything else (node built-ins, drivers, our activities) breaks determinism or the
  // bundle, so it may be imported for its types only.
  zone(
    ['workflows/**/*.ts'],
    [
      refuse('^(?!@temporalio/workflow$|zod$|\\./)', 'workflows/ may import only @temporalio/workflow, zod and other workflow files (use `import type` for anything else)', {
        types: true,
      }),
    ],
  ),

  // ---- activities/*.ts: the factories. Domain, connectors, db/, platform leaves, workflow types.
  zone(['activities/*.ts'], activityRules),
  // ---- activities/domain/**, activities/connectors/**: as the factories, and never a factory.
  ...activityZones,

  // ---- api/: routes, services, auth, schemas. The entry points are a separate zone below.
  zone(['api/**/*.ts'], [...apiRules, apiNoCompositionRoot], apiEntryPoints),
  zone(apiEntryPoints, [...apiRules, entryOnlyRuntime]),

  // ---- temporal/ platform leaves: config, logger, codec import each other at most.
  zone(
    platformLeaves.map(temporalFile),
    [refuse(`^(\\.\\./|\\./(?!(${platformLeaves.join('|')})\\.js$))`, `temporal/${platformLeaves.join(', ')} are leaves (activities/ uses them): they import nothing of ours but each other`)],
  ),
  // ---- temporal/ other platform modules (client, schedules, dev server, CLI provisioning): shared
  // by the API and the composition root, so they import neither the API nor the factories.
  zone(
    ['temporal/**/*.ts'],
    [
      refuse('^(\\.\\./)+api/', 'temporal/ platform modules must not import api/: the API builds on them (only the composition root may import api/)'),
      refuse('^(\\.\\./)+activities/[^/]+\\.js$', 'temporal/ platform modules must not import the activity factories: only the composition root (runtime, worker) wires activities'),
      noTests,
    ],
    [...compositionRoot, ...platformLeaves].map(temporalFile),
  ),
  // The composition root (temporal/runtime.ts, worker.ts, worker-main.ts, demo-catalog.ts, build.ts)
  // and test/ have no zone: they may import anything.
);
