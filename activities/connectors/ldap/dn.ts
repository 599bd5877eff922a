/**
 * Pure DN / filter helpers for the LDAP connector (RFC 4514, RFC 4515).
 *
 * Account DNs are rendered from an operator-edited template and identity attributes
 * that come from HR feeds, so every substituted value is escaped; values never get a
 * chance to add RDNs or change the DN's structure.
 */
import { ConnectorError } from '../types.js';

/** Longest value accepted for one template placeholder. */
export const MAX_PLACEHOLDER_VALUE_LENGTH = 256;

const DN_SPECIALS = new Set([',', '+', '"', '\\', '<', '>', ';', '=']);

function hexByte(code: number): string {
  return '\\' + code.toString(16).padStart(2, '0');
}

/**
 * Escapes one attribute value for use inside a DN (RFC 4514 §2.4):
 * `, + " \ < > ; =` are backslash-escaped, a leading `#` or space and a trailing space
 * are escaped, NUL becomes `\00` and other control characters are hex-escaped.
 */
export function escapeDnValue(value: string): string {
  const chars = Array.from(value);
  let out = '';
  chars.forEach((ch, i) => {
    const code = ch.codePointAt(0) ?? 0;
    if (code === 0) {
      out += '\\00';
    } else if (code < 0x20 || code === 0x7f) {
      out += hexByte(code);
    } else if (DN_SPECIALS.has(ch)) {
      out += '\\' + ch;
    } else if (i === 0 && (ch === '#' || ch === ' ')) {
      out += '\\' + ch;
    } else if (i === chars.length - 1 && ch === ' ') {
      out += '\\ ';
    } else {
      out += ch;
    }
  });
  return out;
}

/** Escapes a value for use inside a search filter (RFC 4515 §3): `* ( ) \ NUL`. */
export function escapeFilterValue(value: string): string {
  let out = '';
  for (const ch of value) {
    switch (ch) {
      case '\\':
        out += '\\5c';
        break;
      case '*':
        out += '\\2a';
        break;
      case '(':
        out += '\\28';
        break;
      case ')':
        out += '\\29';
        break;
      case '\0':
        out += '\\00';
        break;
      default:
        out += ch;
    }
  }
  return out;
}

/**
 * Renders an account DN template such as `uid={username},ou=people,dc=example,dc=test`.
 * Every `{name}` placeholder is replaced by the DN-escaped value of `vars[name]`.
 * Throws ConnectorError('InvalidInput') for an unknown placeholder, an empty value,
 * a value with a NUL byte or a value longer than 256 characters.
 */
export function renderAccountDn(template: string, vars: Readonly<Record<string, string | undefined>>): string {
  return template.replace(/\{([^{}]*)\}/g, (_match, name: string) => {
    if (!Object.prototype.hasOwnProperty.call(vars, name)) {
      throw new ConnectorError('InvalidInput', `account DN template uses unknown placeholder {${name}}`);
    }
    const value = vars[name];
    if (typeof value !== 'string' || value.length === 0) {
      throw new ConnectorError('InvalidInput', `value for {${name}} is empty`);
    }
    if (value.includes('\0')) {
      throw new ConnectorError('InvalidInput', `value for {${name}} contains a NUL byte`);
    }
    if (value.length > MAX_PLACEHOLDER_VALUE_LENGTH) {
      throw new ConnectorError(
        'InvalidInput',
        `value for {${name}} is longer than ${MAX_PLACEHOLDER_VALUE_LENGTH} characters`,
      );
    }
    return escapeDnValue(value);
  });
}

interface Ava {
  type: string;
  value: string;
  /** true when the value was written as a `#`-prefixed BER hexstring (kept verbatim). */
  ber?: boolean;
}

/** Parses a DN string into RDNs of AVAs with unescaped values; throws on malformed input. */
export function parseDn(dn: string): Ava[][] {
  const rdns: Ava[][] = [];
  let i = 0;
  const n = dn.length;
  const skipSpaces = () => {
    while (i < n && dn[i] === ' ') i++;
  };
  if (dn.trim() === '') return rdns;
  let current: Ava[] = [];
  for (;;) {
    skipSpaces();
    // attribute type
    const typeStart = i;
    while (i < n && dn[i] !== '=' && dn[i] !== ',' && dn[i] !== '+' && dn[i] !== ';') i++;
    if (i >= n || dn[i] !== '=') throw new Error(`malformed DN (missing '=' in RDN): ${dn}`);
    const type = dn.slice(typeStart, i).trim();
    if (type === '') throw new Error(`malformed DN (empty attribute type): ${dn}`);
    i++; // '='
    skipSpaces();
    // attribute value
    let value = '';
    let ber = false;
    if (dn[i] === '#') {
      ber = true;
      // BER-encoded hexstring: keep verbatim
      const start = i;
      while (i < n && dn[i] !== ',' && dn[i] !== '+' && dn[i] !== ';' && dn[i] !== ' ') i++;
      value = dn.slice(start, i);
      skipSpaces();
    } else if (dn[i] === '"') {
      // quoted value (RFC 2253 compatibility)
      i++;
      while (i < n && dn[i] !== '"') {
        if (dn[i] === '\\' && i + 1 < n) i++;
        value += dn[i];
        i++;
      }
      if (i >= n) throw new Error(`malformed DN (unterminated quote): ${dn}`);
      i++;
      skipSpaces();
    } else {
      const bytes: number[] = [];
      let lastEscapedLength = 0; // length of `bytes` after the last escaped char
      while (i < n && dn[i] !== ',' && dn[i] !== '+' && dn[i] !== ';') {
        const ch = dn[i] as string;
        if (ch === '\\') {
          const next = dn.slice(i + 1, i + 3);
          if (/^[0-9a-fA-F]{2}$/.test(next)) {
            bytes.push(parseInt(next, 16));
            i += 3;
          } else if (i + 1 < n) {
            const escaped = dn.codePointAt(i + 1) ?? 0;
            const s = String.fromCodePoint(escaped);
            bytes.push(...Buffer.from(s, 'utf8'));
            i += 1 + s.length;
          } else {
            throw new Error(`malformed DN (dangling backslash): ${dn}`);
          }
          lastEscapedLength = bytes.length;
        } else {
          const cp = dn.codePointAt(i) ?? 0;
          const s = String.fromCodePoint(cp);
          bytes.push(...Buffer.from(s, 'utf8'));
          i += s.length;
        }
      }
      // strip unescaped trailing spaces
      let end = bytes.length;
      while (end > lastEscapedLength && bytes[end - 1] === 0x20) end--;
      value = Buffer.from(bytes.slice(0, end)).toString('utf8');
    }
    current.push(ber ? { type, value, ber } : { type, value });
    if (i >= n) {
      rdns.push(current);
      break;
    }
    const sep = dn[i];
    i++;
    if (sep === '+') continue;
    rdns.push(current);
    current = [];
    if (i >= n) throw new Error(`malformed DN (trailing separator): ${dn}`);
  }
  return rdns;
}

/**
 * Canonical form of a DN for case-insensitive comparison: attribute types and values
 * lower-cased, insignificant spaces around `=`, `,` and `+` removed, escaping made
 * uniform (so `cn=a\2cb` and `CN = A\,B` compare equal), multi-valued RDNs sorted.
 * Malformed DNs fall back to a trimmed, lower-cased copy.
 */
export function normalizeDn(dn: string): string {
  const rdns = normalizedRdns(dn);
  return rdns === undefined ? dn.trim().toLowerCase() : rdns.join(',');
}

function normalizedRdns(dn: string): string[] | undefined {
  let rdns: Ava[][];
  try {
    rdns = parseDn(dn);
  } catch {
    return undefined;
  }
  return rdns.map((rdn) =>
    rdn
      .map((ava) => {
        const type = ava.type.toLowerCase();
        const value = ava.ber ? ava.value.toLowerCase() : escapeDnValue(ava.value.toLowerCase());
        return `${type}=${value}`;
      })
      .sort()
      .join('+'),
  );
}

/**
 * Case-preserving canonical spelling: the same escaping as escapeDnValue (so a DN that
 * slapd returns as `uid=a\2Cb,...` comes back as `uid=a\,b,...`, exactly what
 * renderAccountDn produced) and no insignificant spaces. Malformed DNs are returned as is.
 */
export function canonicalDn(dn: string): string {
  let rdns: Ava[][];
  try {
    rdns = parseDn(dn);
  } catch {
    return dn;
  }
  return rdns
    .map((rdn) => rdn.map((ava) => `${ava.type}=${ava.ber ? ava.value : escapeDnValue(ava.value)}`).join('+'))
    .join(',');
}

/** True when two DNs name the same entry (per normalizeDn). */
export function dnEquals(a: string, b: string): boolean {
  return normalizeDn(a) === normalizeDn(b);
}

/** True when `dn` equals `base` or lies below it. */
export function isDnWithin(dn: string, base: string): boolean {
  const d = normalizedRdns(dn);
  const b = normalizedRdns(base);
  if (d === undefined || b === undefined) return false;
  if (b.length > d.length) return false;
  const offset = d.length - b.length;
  return b.every((rdn, i) => d[offset + i] === rdn);
}
