import { createHash } from 'node:crypto';
import { Environment } from '@marcbachmann/cel-js';
import { LineCounter, isNode, parseDocument, type Document } from 'yaml';
import { canonicalJson } from '../audit.js';
import { policyDocument, type PolicyDocument } from './schema.js';

export interface PolicyProblem {
  /** 1-based line and column in the source text; 0 when no position applies. */
  line: number;
  column: number;
  path: string;
  message: string;
}

export type LoadResult = { ok: true; document: PolicyDocument; version: string } | { ok: false; problems: PolicyProblem[] };

/**
 * The CEL environment of every `when`: the request's parties and catalog item as maps.
 * Unlisted variables are refused, so a typo like `subjet.location` fails at load time.
 */
export function celEnvironment(): Environment {
  return new Environment({ unlistedVariablesAreDyn: false, homogeneousAggregateLiterals: false, limits: { maxAstNodes: 2000, maxDepth: 32 } })
    .registerVariable('subject', 'map')
    .registerVariable('requester', 'map')
    .registerVariable('entitlement', 'map')
    .registerVariable('system', 'map')
    .registerVariable('request', 'map');
}

/** The document's version: a digest of its canonical form (formatting and key order do not count). */
export function policyVersionOfDocument(doc: PolicyDocument): string {
  return `pol@${createHash('sha256').update(canonicalJson(doc)).digest('hex').slice(0, 16)}`;
}

/**
 * Parses YAML or JSON (JSON is YAML 1.2), validates with zod and compiles every CEL
 * expression. Problems carry the line and column of the offending value.
 */
export function loadPolicyText(text: string): LoadResult {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined) => {
    if (offset === undefined) return { line: 0, column: 0 };
    const p = lines.linePos(offset);
    return { line: p.line, column: p.col };
  };
  if (doc.errors.length > 0) {
    return { ok: false, problems: doc.errors.map((e) => ({ ...at(e.pos[0]), path: '', message: e.message.split('\n')[0]! })) };
  }
  const parsed = policyDocument.safeParse(doc.toJS());
  if (!parsed.success) {
    return {
      ok: false,
      problems: parsed.error.issues.map((i) => ({ ...at(offsetOf(doc, i.path)), path: i.path.join('.'), message: i.message })),
    };
  }
  const env = celEnvironment();
  const problems: PolicyProblem[] = [];
  parsed.data.policies.forEach((p, pi) =>
    p.conditions.forEach((c, ci) => {
      const path = ['policies', pi, 'conditions', ci, 'when'];
      try {
        const checked = env.check(c.when);
        if (!checked.valid) throw checked.error ?? new Error('invalid expression');
        if (checked.type !== 'bool' && checked.type !== 'dyn') throw new Error(`must be a boolean expression, not ${checked.type}`);
      } catch (e) {
        problems.push({ ...at(offsetOf(doc, path)), path: path.join('.'), message: `CEL: ${(e as Error).message.split('\n')[0]}` });
      }
    }),
  );
  parsed.data.birthright.forEach((b, bi) => {
    const path = ['birthright', bi, 'when'];
    try {
      const checked = env.check(b.when);
      if (!checked.valid) throw checked.error ?? new Error('invalid expression');
    } catch (e) {
      problems.push({ ...at(offsetOf(doc, path)), path: path.join('.'), message: `CEL: ${(e as Error).message.split('\n')[0]}` });
    }
  });
  const names = new Set<string>();
  parsed.data.policies.forEach((p, i) => {
    if (names.has(p.name)) problems.push({ ...at(offsetOf(doc, ['policies', i, 'name'])), path: `policies.${i}.name`, message: `duplicate policy name ${p.name}` });
    names.add(p.name);
  });
  if (problems.length) return { ok: false, problems };
  return { ok: true, document: parsed.data, version: policyVersionOfDocument(parsed.data) };
}

/** Source offset of the deepest node on `path` that exists (a missing key points at its parent). */
function offsetOf(doc: Document, path: PropertyKey[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n) as Array<string | number>, true);
    if (isNode(node) && node.range) return node.range[0];
  }
  return undefined;
}

export function formatProblems(problems: PolicyProblem[], file = 'policy'): string {
  return problems.map((p) => `${file}:${p.line}:${p.column}: ${p.path ? `${p.path}: ` : ''}${p.message}`).join('\n');
}
