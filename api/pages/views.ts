import type { Principal } from '../auth.js';
import { html, type Html } from './html.js';
import type { ApprovalView } from './queries.js';

/** What the layout needs to know about the signed-in person (nothing when signed out or on an action link). */
export interface Viewer {
  principal: Principal;
  csrf: string;
}

const fmtDate = (d: Date | null | undefined) => (d ? d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC') : '—');

export function fmtDuration(seconds: number | null | undefined): string {
  if (!seconds) return '—';
  const units: Array<[number, string]> = [
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  const parts: string[] = [];
  let left = seconds;
  for (const [n, name] of units) {
    const q = Math.floor(left / n);
    if (q > 0 && parts.length < 2) parts.push(`${q} ${name}${q === 1 ? '' : 's'}`);
    left -= q * n;
  }
  return parts.join(' ');
}

const riskBadge = (tier: string) => html`<span class="risk risk-${tier}">${tier}</span>`;

function nav(viewer: Viewer | undefined): Html {
  if (!viewer) return html``;
  const p = viewer.principal;
  const has = (r: string) => p.roles.includes(r as never);
  return html`<nav aria-label="Main">
  <ul><li><strong>accessloop</strong></li></ul>
  <ul>
    ${has('approver') ? html`<li><a href="/approvals">Approvals</a></li>` : ''}
    ${p.identityId ? html`<li><a href="/reviews">Reviews</a></li>` : ''}
    ${has('requester') ? html`<li><a href="/break-glass">Break-glass</a></li>` : ''}
    ${has('operator') || has('auditor') ? html`<li><a href="/kpis">KPIs</a></li>` : ''}
    <li><form method="post" action="/logout" class="inline"><input type="hidden" name="_csrf" value="${viewer.csrf}"><button type="submit" class="secondary outline">Sign out</button></form></li>
  </ul>
</nav>`;
}

/** The one page frame: no inline script or style anywhere (the CSP forbids both). */
export function layout(title: string, body: Html, opts: { viewer?: Viewer | undefined; scripts?: string[] } = {}): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>${title} · accessloop</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/pico.min.css">
<link rel="stylesheet" href="/assets/app.css">
${(opts.scripts ?? []).map((s) => html`<script src="/assets/${s}" defer></script>`)}
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="container">${nav(opts.viewer)}</header>
<main id="main" class="container">
${body}
</main>
</body>
</html>
`.value;
}

export function messagePage(title: string, message: string, opts: { viewer?: Viewer | undefined; links?: Array<[string, string]> } = {}): string {
  return layout(
    title,
    html`<article>
  <h1>${title}</h1>
  <p>${message}</p>
  ${opts.links?.length ? html`<p>${opts.links.map(([href, label]) => html`<a href="${href}" role="button" class="secondary">${label}</a> `)}</p>` : ''}
</article>`,
    { viewer: opts.viewer },
  );
}

export function loginPage(error?: string): string {
  return layout(
    'Sign in',
    html`<article>
  <h1>Sign in</h1>
  <p>Paste your accessloop API token. It is exchanged for a session cookie; the token itself is not stored in the browser.</p>
  ${error ? html`<p role="alert" class="error">${error}</p>` : ''}
  <form method="post" action="/login">
    <label for="token">API token</label>
    <input id="token" name="token" type="password" autocomplete="off" required minlength="16" maxlength="300" ${error ? html`aria-invalid="true"` : ''}>
    <button type="submit">Sign in</button>
  </form>
</article>`,
  );
}

export function approvalsPage(viewer: Viewer, items: Array<{ requestId: string; stageName: string; dueAt: Date; subject: string; entitlement: string; riskTier: string; durationSeconds: number | null; ticketRef: string | null }>): string {
  return layout(
    'Approvals',
    html`<h1>Waiting for your decision</h1>
${
  items.length === 0
    ? html`<p>Nothing is waiting for you.</p>`
    : html`<div class="table-wrap"><table>
  <caption>${items.length} open approval${items.length === 1 ? '' : 's'}, soonest due first</caption>
  <thead><tr><th scope="col">Who</th><th scope="col">What</th><th scope="col">Risk</th><th scope="col">Duration</th><th scope="col">Ticket</th><th scope="col">Due</th></tr></thead>
  <tbody>
  ${items.map(
    (i) => html`<tr>
    <td>${i.subject}</td>
    <td><a href="/approvals/${i.requestId}">${i.entitlement}</a></td>
    <td>${riskBadge(i.riskTier)}</td>
    <td>${fmtDuration(i.durationSeconds)}</td>
    <td>${i.ticketRef ?? '—'}</td>
    <td>${fmtDate(i.dueAt)}</td>
  </tr>`,
  )}
  </tbody>
</table></div>`
}`,
    { viewer },
  );
}

/**
 * The approval page, for an action link and for a signed-in approver alike: the form posts back
 * to `action` (the link itself, or /approvals/:id with the session's CSRF token).
 */
export function approvalPage(v: ApprovalView, form: { action: string; csrf?: string }, viewer?: Viewer): string {
  const r = v.request;
  const decided = v.myTasks.filter((t) => t.status !== 'pending');
  return layout(
    `Approve ${v.entitlement.name} for ${v.subject.displayName}`,
    html`<hgroup>
  <h1>${v.entitlement.name} for ${v.subject.displayName}</h1>
  <p>Request <code>${r.id}</code> · ${r.status.replace(/_/g, ' ')}</p>
</hgroup>
<article aria-labelledby="what">
  <h2 id="what">What is asked</h2>
  <dl class="facts">
    <dt>Who</dt><dd>${v.subject.displayName} (<code>${v.subject.username}</code>${v.subject.department ? html`, ${v.subject.department}` : ''})${v.requester.self ? '' : html`, requested by ${v.requester.displayName}`}</dd>
    <dt>What</dt><dd>${v.entitlement.name} on ${v.entitlement.system}${v.entitlement.description ? html`<br><small>${v.entitlement.description}</small>` : ''}</dd>
    <dt>Risk tier</dt><dd>${riskBadge(v.entitlement.riskTier)}</dd>
    <dt>Duration</dt><dd>${fmtDuration(r.durationSeconds)}${r.startAt ? html`, from ${fmtDate(r.startAt)}` : ''}</dd>
    <dt>Justification</dt><dd class="prose">${r.justification}</dd>
    <dt>Ticket</dt><dd>${r.ticketRef ?? 'none'}</dd>
    <dt>Requested</dt><dd>${fmtDate(r.createdAt)}</dd>
  </dl>
</article>
<article aria-labelledby="why">
  <h2 id="why">Why you are asked</h2>
  ${v.policyReasons.length ? html`<ul>${v.policyReasons.map((p) => html`<li><code>${p}</code></li>`)}</ul>` : html`<p>The default policy: the entitlement's owner approves.</p>`}
  <h3>Separation of duties</h3>
  ${v.sodNotes.length ? html`<ul class="sod">${v.sodNotes.map((n) => html`<li>${n}</li>`)}</ul>` : html`<p>No separation-of-duties conflict.</p>`}
</article>
<article aria-labelledby="holds">
  <h2 id="holds">${v.subject.displayName} holds now</h2>
  ${
    v.currentAccess.length
      ? html`<div class="table-wrap"><table>
    <thead><tr><th scope="col">Entitlement</th><th scope="col">System</th><th scope="col">Risk</th><th scope="col">Until</th><th scope="col">Source</th></tr></thead>
    <tbody>${v.currentAccess.map((a) => html`<tr><td>${a.entitlement}</td><td>${a.system}</td><td>${riskBadge(a.riskTier)}</td><td>${fmtDate(a.expiresAt)}</td><td>${a.source.replace(/_/g, ' ')}</td></tr>`)}</tbody>
  </table></div>`
      : html`<p>No active access.</p>`
  }
</article>
${
  v.open
    ? html`<article aria-labelledby="decide">
  <h2 id="decide">Your decision</h2>
  <p>Stage ${v.open.stage} (${v.open.stageName}), due ${fmtDate(v.open.dueAt)}.</p>
  <form method="post" action="${form.action}">
    ${form.csrf ? html`<input type="hidden" name="_csrf" value="${form.csrf}">` : ''}
    <label for="comment">Comment${v.open.requireComment ? ' (required: this is a separation-of-duties exception)' : ' (optional)'}</label>
    <textarea id="comment" name="comment" rows="3" maxlength="2000" ${v.open.requireComment ? html`required` : ''}></textarea>
    <div class="grid">
      <button type="submit" name="decision" value="approve">Approve</button>
      <button type="submit" name="decision" value="reject" class="secondary">Reject</button>
    </div>
  </form>
</article>`
    : html`<article><h2>Your decision</h2><p>Nothing is open for you on this request${decided.length ? html`: you ${decided.map((d) => d.status).join(', ')} it` : ''}.</p></article>`
}`,
    { viewer },
  );
}

export function decisionDonePage(decision: 'approve' | 'reject', status: string, viewer?: Viewer): string {
  return messagePage(decision === 'approve' ? 'Approved' : 'Rejected', `Your decision is recorded. The request is now ${status.replace(/_/g, ' ')}.`, {
    viewer,
    ...(viewer ? { links: [['/approvals', 'Back to your approvals']] as Array<[string, string]> } : {}),
  });
}

export interface KpiSummary {
  label: string;
  rows: Array<[string, string]>;
}

export function kpisPage(viewer: Viewer, summary: KpiSummary): string {
  return layout(
    'KPIs',
    html`<h1>Key measures, ${summary.label}</h1>
<article>
  <h2 id="latency">Latency (p50 and p95, seconds)</h2>
  <figure>
    <canvas id="kpi-chart" data-src="/kpis/data.json" role="img" aria-labelledby="latency" height="260"></canvas>
  </figure>
</article>
<article>
  <h2>Figures</h2>
  <div class="table-wrap"><table>
    <tbody>${summary.rows.map(([k, v]) => html`<tr><th scope="row">${k}</th><td>${v}</td></tr>`)}</tbody>
  </table></div>
</article>`,
    { viewer, scripts: ['chart.umd.min.js', 'kpis.js'] },
  );
}

// ---- break-glass

export interface BreakGlassUse {
  requestId: string;
  status: string;
  entitlement: string;
  riskTier: string;
  incidentRef: string;
  confirmedAt: Date | null;
  grantStatus: string | null;
  expiresAt: Date | null;
}

function leaseCell(u: BreakGlassUse): Html {
  if (u.grantStatus === 'active' && u.expiresAt && u.expiresAt.getTime() > Date.now()) {
    return html`<span class="countdown" data-countdown-to="${u.expiresAt.toISOString()}" role="timer" aria-live="off">${fmtDate(u.expiresAt)}</span><br><small>ends ${fmtDate(u.expiresAt)}</small>`;
  }
  return html`${(u.grantStatus ?? u.status).replace(/_/g, ' ')}`;
}

export function breakGlassPage(
  viewer: Viewer,
  d: { entitlements: Array<{ id: string; name: string; riskTier: string; system: string; maxDurationSeconds: number }>; uses: BreakGlassUse[]; error?: string | undefined },
): string {
  return layout(
    'Break-glass',
    html`<h1>Break-glass</h1>
<p>Emergency access without approval. Every approver, the owner and the security group are told at once, a post-use review follows, and the lease ends and is verified as usual.</p>
${d.error ? html`<p role="alert" class="error">${d.error}</p>` : ''}
${
  d.entitlements.length === 0
    ? html`<p>No entitlement allows break-glass.</p>`
    : html`<article aria-labelledby="invoke">
  <h2 id="invoke">Break glass</h2>
  <form method="post" action="/break-glass">
    <input type="hidden" name="_csrf" value="${viewer.csrf}">
    <label for="entitlementId">Entitlement</label>
    <select id="entitlementId" name="entitlementId" required>
      ${d.entitlements.map((e) => html`<option value="${e.id}">${e.name} (${e.system}, ${e.riskTier}, at most ${fmtDuration(e.maxDurationSeconds)})</option>`)}
    </select>
    <label for="durationMinutes">Duration in minutes</label>
    <input id="durationMinutes" name="durationMinutes" type="number" min="1" max="10080" value="15" required inputmode="numeric">
    <label for="incidentRef">Incident or ticket</label>
    <input id="incidentRef" name="incidentRef" required maxlength="64" pattern="[A-Za-z0-9][A-Za-z0-9._:#/\\-]{0,63}" autocomplete="off">
    <label for="justification">Justification</label>
    <textarea id="justification" name="justification" rows="3" required minlength="10" maxlength="2000"></textarea>
    <button type="submit">Continue</button>
  </form>
</article>`
}
<article aria-labelledby="uses">
  <h2 id="uses">Your break-glass uses</h2>
  ${
    d.uses.length
      ? html`<div class="table-wrap"><table>
    <thead><tr><th scope="col">Entitlement</th><th scope="col">Incident</th><th scope="col">Confirmed</th><th scope="col">Lease</th></tr></thead>
    <tbody>${d.uses.map((u) => html`<tr><td><a href="/break-glass/requests/${u.requestId}">${u.entitlement}</a> ${riskBadge(u.riskTier)}</td><td>${u.incidentRef}</td><td>${fmtDate(u.confirmedAt)}</td><td>${leaseCell(u)}</td></tr>`)}</tbody>
  </table></div>`
      : html`<p>None.</p>`
  }
</article>`,
    { viewer, scripts: ['countdown.js'] },
  );
}

export function breakGlassConfirmPage(
  viewer: Viewer,
  out: { id: string; confirmation: string; expiresAt: string; willDo: { grant: { entitlementName: string; riskTier: string; durationSeconds: number }; notify: string[]; postUseReview: { dueWithinHours: number }; cooldownSeconds: number; credentialRotation: string } },
): string {
  const w = out.willDo;
  return layout(
    'Confirm break-glass',
    html`<h1>Confirm break-glass</h1>
<article aria-labelledby="will">
  <h2 id="will">This will</h2>
  <ul>
    <li>grant <strong>${w.grant.entitlementName}</strong> ${riskBadge(w.grant.riskTier)} at once, without approval, for ${fmtDuration(w.grant.durationSeconds)};</li>
    <li>tell at once: ${w.notify.join(', ')};</li>
    <li>open a post-use review due within ${w.postUseReview.dueWithinHours} hours (until it is decided you cannot break glass again);</li>
    <li>block another use on this entitlement for ${fmtDuration(w.cooldownSeconds) || 'no time'};</li>
    <li>credential: ${w.credentialRotation}.</li>
  </ul>
  <p>Confirm before ${fmtDate(new Date(out.expiresAt))} (<span data-countdown-to="${out.expiresAt}" role="timer" aria-live="off">5:00</span> left).</p>
  <form method="post" action="/break-glass/${out.id}/confirm">
    <input type="hidden" name="_csrf" value="${viewer.csrf}">
    <input type="hidden" name="confirmation" value="${out.confirmation}">
    <div class="grid">
      <button type="submit">Confirm break-glass</button>
      <a href="/break-glass" role="button" class="secondary">Cancel</a>
    </div>
  </form>
</article>`,
    { viewer, scripts: ['countdown.js'] },
  );
}

export function breakGlassLeasePage(viewer: Viewer, u: BreakGlassUse): string {
  const live = u.grantStatus === 'active' && u.expiresAt;
  return layout(
    'Break-glass lease',
    html`<h1>${u.entitlement} ${riskBadge(u.riskTier)}</h1>
<article>
  <p>Incident <code>${u.incidentRef}</code>, confirmed ${fmtDate(u.confirmedAt)}. Request <code>${u.requestId}</code> is ${u.status.replace(/_/g, ' ')}.</p>
  ${
    live
      ? html`<h2>Time left</h2><p id="lease-countdown" class="countdown" data-countdown-to="${u.expiresAt!.toISOString()}" role="timer" aria-live="off">${fmtDate(u.expiresAt)}</p><p>The lease ends at ${fmtDate(u.expiresAt)}; the removal is read back from the target.</p>`
      : html`<p>The lease is ${(u.grantStatus ?? 'being set up').replace(/_/g, ' ')}. <a href="/break-glass/requests/${u.requestId}">Reload</a></p>`
  }
  <p><a href="/break-glass">Back to break-glass</a></p>
</article>`,
    { viewer, scripts: ['countdown.js'] },
  );
}

// ---- access reviews

export interface PendingReviewItem {
  itemId: string;
  campaignId: string;
  campaignName: string;
  dueAt: Date;
  holderUsername: string;
  entitlementName: string;
  riskTier: string;
  lastUsedAt: Date | null;
  provenance: Record<string, unknown>;
  commentRequired: boolean;
}
export interface DecidedReviewItem {
  itemId: string;
  campaignName: string;
  holderUsername: string;
  entitlementName: string;
  riskTier: string;
  status: string;
  decidedAt: Date | null;
  comment: string | null;
  removalVerifiedAt: Date | null;
}

export function reviewsPage(
  viewer: Viewer,
  d: {
    filters: { campaignId?: string | undefined; riskTier?: string | undefined; status: 'pending' | 'decided' };
    campaigns: Array<{ id: string; name: string; progress: { items: number; pending: number; completionPercent: number }; mine: { total: number; decided: number } }>;
    pending: PendingReviewItem[];
    decided: DecidedReviewItem[];
    outcome?: { decided: number; errors: Array<{ itemId: string; message: string }> } | undefined;
  },
): string {
  const f = d.filters;
  const opt = (value: string, label: string, selected: boolean) => html`<option value="${value}" ${selected ? html`selected` : ''}>${label}</option>`;
  return layout(
    'Access reviews',
    html`<h1>Access reviews</h1>
${d.outcome ? html`<p role="status">${d.outcome.decided} item${d.outcome.decided === 1 ? '' : 's'} kept.${d.outcome.errors.length ? html` Not kept: ${d.outcome.errors.map((e) => e.message).join('; ')}.` : ''}</p>` : ''}
<section aria-labelledby="progress">
  <h2 id="progress">Progress</h2>
  ${
    d.campaigns.length
      ? d.campaigns.map(
          (c) => html`<p><strong>${c.name}</strong>: you decided ${c.mine.decided} of ${c.mine.total}; the campaign is ${c.progress.completionPercent} % done.
    <progress value="${c.progress.items - c.progress.pending}" max="${c.progress.items || 1}" aria-label="${c.name} completion"></progress></p>`,
        )
      : html`<p>No campaign has items for you.</p>`
  }
</section>
<form method="get" action="/reviews" class="filters" aria-label="Filters">
  <div class="grid">
    <label>Campaign <select name="campaign">${opt('', 'All', !f.campaignId)}${d.campaigns.map((c) => opt(c.id, c.name, f.campaignId === c.id))}</select></label>
    <label>Risk tier <select name="risk">${opt('', 'All', !f.riskTier)}${['low', 'medium', 'high', 'privileged'].map((t) => opt(t, t, f.riskTier === t))}</select></label>
    <label>Status <select name="status">${opt('pending', 'To decide', f.status === 'pending')}${opt('decided', 'Decided', f.status === 'decided')}</select></label>
  </div>
  <button type="submit" class="secondary">Filter</button>
</form>
${
  f.status === 'pending'
    ? d.pending.length
      ? html`<form method="post" action="/reviews/keep">
  <input type="hidden" name="_csrf" value="${viewer.csrf}">
  <div class="table-wrap"><table>
    <caption>${d.pending.length} item${d.pending.length === 1 ? '' : 's'} to decide</caption>
    <thead><tr><th scope="col">Keep</th><th scope="col">Holder</th><th scope="col">Entitlement</th><th scope="col">Risk</th><th scope="col">Provenance</th><th scope="col">Last used</th><th scope="col">Due</th><th scope="col">Decide</th></tr></thead>
    <tbody>${d.pending.map((i) => {
      const label = `Keep ${i.entitlementName} for ${i.holderUsername}`;
      return html`<tr>
      <td><input type="checkbox" name="itemIds" value="${i.itemId}" id="keep-${i.itemId}" aria-label="${label}"></td>
      <td>${i.holderUsername}</td><td>${i.entitlementName}</td><td>${riskBadge(i.riskTier)}${i.commentRequired ? html`<br><small>comment required</small>` : ''}</td>
      <td>${provenanceOf(i.provenance)}</td><td>${fmtDate(i.lastUsedAt)}</td><td>${fmtDate(i.dueAt)}</td>
      <td><a href="/reviews/items/${i.itemId}" aria-label="Keep or revoke ${i.entitlementName} for ${i.holderUsername}">Keep or revoke…</a></td>
    </tr>`;
    })}</tbody>
  </table></div>
  <label for="bulk-comment">Comment for the kept items (required for privileged ones)</label>
  <input id="bulk-comment" name="comment" maxlength="2000">
  <button type="submit">Keep selected</button>
</form>`
      : html`<p>Nothing left to decide${f.campaignId || f.riskTier ? ' with these filters' : ''}.</p>`
    : html`<div class="table-wrap"><table>
    <caption>${d.decided.length} decided item${d.decided.length === 1 ? '' : 's'}</caption>
    <thead><tr><th scope="col">Holder</th><th scope="col">Entitlement</th><th scope="col">Risk</th><th scope="col">Decision</th><th scope="col">When</th><th scope="col">Removal verified</th></tr></thead>
    <tbody>${d.decided.map((i) => html`<tr><td>${i.holderUsername}</td><td>${i.entitlementName}</td><td>${riskBadge(i.riskTier)}</td><td>${i.status}${i.comment ? html`<br><small>${i.comment}</small>` : ''}</td><td>${fmtDate(i.decidedAt)}</td><td>${i.status === 'revoked' ? fmtDate(i.removalVerifiedAt) : '—'}</td></tr>`)}</tbody>
  </table></div>`
}`,
    { viewer },
  );
}

function provenanceOf(p: Record<string, unknown>): Html {
  const approvals = Array.isArray(p.approvals) ? (p.approvals as Array<{ decidedAt?: string | null }>) : [];
  const last = approvals.map((a) => a.decidedAt).filter((x): x is string => !!x).sort().at(-1);
  const ticket = typeof p.ticketRef === 'string' ? p.ticketRef : undefined;
  return html`${String(p.source ?? '—').replace(/_/g, ' ')}${last ? html`, approved ${fmtDate(new Date(last))}` : ''}${ticket ? html`<br><small>ticket ${ticket}</small>` : ''}`;
}

export function reviewItemPage(viewer: Viewer, i: PendingReviewItem): string {
  return layout(
    'Review item',
    html`<h1>${i.entitlementName} held by ${i.holderUsername}</h1>
<article>
  <dl class="facts">
    <dt>Campaign</dt><dd>${i.campaignName}, due ${fmtDate(i.dueAt)}</dd>
    <dt>Risk tier</dt><dd>${riskBadge(i.riskTier)}</dd>
    <dt>Provenance</dt><dd>${provenanceOf(i.provenance)}</dd>
    <dt>Last used</dt><dd>${fmtDate(i.lastUsedAt)}</dd>
  </dl>
</article>
<article aria-labelledby="decide">
  <h2 id="decide">Your decision</h2>
  <form method="post" action="/reviews/items/${i.itemId}/decision">
    <input type="hidden" name="_csrf" value="${viewer.csrf}">
    <label for="comment">Comment (required to revoke${i.commentRequired ? ' and, for privileged access, to keep' : ''})</label>
    <textarea id="comment" name="comment" rows="3" maxlength="2000"></textarea>
    <div class="grid">
      <button type="submit" name="decision" value="keep" class="secondary">Keep</button>
      <button type="submit" name="decision" value="revoke">Revoke</button>
    </div>
  </form>
  <p><a href="/reviews">Back to the list</a></p>
</article>`,
    { viewer },
  );
}
