// The failure converter of the worker (workflow sandbox and activities) and of every client:
// failure messages and stack traces travel as a payload (`encodedAttributes`), so they pass
// through the payload codec and are sealed in history like any other payload; connector errors
// name directory accounts, activity failures can carry SQL parameters
// (docs/architecture.md#9-security-properties).
//
// Plain CommonJS on purpose: the SDK loads it by path in two ways, webpack's alias inside the
// workflow bundle and a native `require()` on the activity and client side. A .ts module would
// load under tsx only, not through vitest's transform or the compiled build (temporal/build.ts
// copies this file into dist/temporal/).
'use strict';
const { DefaultFailureConverter } = require('@temporalio/common');

exports.failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
