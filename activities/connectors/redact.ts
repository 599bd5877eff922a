/**
 * Masks secrets in a target's error text before it becomes a ConnectorError message: those
 * messages reach logs, audit events and workflow histories. Empty secrets are skipped (an
 * empty string would match between every character).
 */
export function redact(message: string, secrets: string | readonly string[]): string {
  let out = message;
  for (const s of typeof secrets === 'string' ? [secrets] : secrets) if (s) out = out.split(s).join('***');
  return out;
}
