import { describe, expect, it } from 'vitest';
import { canonicalJson, GENESIS_HASH, hashEvent } from '../../activities/domain/audit.js';

const event = {
  seq: 1,
  idempotencyKey: 'k1',
  stream: 'request:r1',
  streamSeq: 1,
  hashVersion: 2,
  at: new Date('2026-01-01T00:00:00Z'),
  actorType: 'identity',
  actorId: 'a',
  action: 'request.approved',
  requestId: null,
  grantId: null,
  identityId: null,
  reason: null,
  policyVersion: 'p1',
  data: { b: 1, a: [1, { y: 2, x: 1 }] },
  prevHash: GENESIS_HASH,
};

describe('audit hashing', () => {
  it('serialises objects canonically, independent of key order', () => {
    expect(canonicalJson({ b: 1, a: { d: 2, c: 1 } })).toBe(canonicalJson({ a: { c: 1, d: 2 }, b: 1 }));
    expect(canonicalJson({ a: undefined, b: null })).toBe('{"b":null}');
  });

  it('leaves the global seq out of a stream event’s hash (an id, not part of the chain), and keeps version 1 as it was', () => {
    expect(hashEvent({ ...event, seq: 99 })).toBe(hashEvent(event));
    const v1 = { ...event, stream: 'legacy', hashVersion: 1 };
    expect(hashEvent({ ...v1, seq: 2 })).not.toBe(hashEvent(v1));
    expect(hashEvent(v1)).not.toBe(hashEvent(event));
  });

  it('changes the hash when any field or the predecessor changes', () => {
    const h = hashEvent(event);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(hashEvent({ ...event, data: { a: [1, { x: 1, y: 2 }], b: 1 } })).toBe(h);
    for (const tampered of [
      { ...event, actorId: 'b' },
      { ...event, data: { b: 2, a: [1, { y: 2, x: 1 }] } },
      { ...event, at: new Date('2026-01-01T00:00:01Z') },
      { ...event, prevHash: 'f'.repeat(64) },
      { ...event, policyVersion: 'p2' },
      { ...event, stream: 'request:r2' },
      { ...event, streamSeq: 2 },
    ]) {
      expect(hashEvent(tampered)).not.toBe(h);
    }
  });
});
