import type { Outcome, RequestOps } from '../../activities/domain/request-ops.js';
import { shortenUpdate, stateQuery } from '../../workflows/messages.js';
import type { Principal } from '../auth.js';
import { HttpError, conflict, forbidden } from '../errors.js';
import { isParty, type AccessRequestService } from './access-requests.js';
import { fromUpdateError, sendUpdate } from './update-rejections.js';

type Deps = { service: AccessRequestService; temporal: Parameters<typeof import('./access-requests.js').createAccessRequestService>[0]['temporal'] };

/** A refusal the API would answer with a 4xx is said back on the ticket; anything else (an outage, a bug) is thrown and retried. */
async function outcome<T>(run: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await run() };
  } catch (e) {
    if (e instanceof HttpError && e.status < 500) return { ok: false, status: e.status, code: e.code, message: e.message };
    throw e;
  }
}

/** A desk user mapped to an identity acts with the rights a requester token of that identity would have: no more. */
const asRequester = (identityId: string): Principal => ({ tokenId: 'service-desk', identityId, clientName: null, roles: ['requester'] });

/**
 * The service desk's way into the access-request rules (activities/deps.ts `RequestOps`): the
 * same service the REST routes call, so a ticket can do exactly what its creator or approver
 * could do through the API, and nothing policy would refuse.
 */
export function createDeskRequestOps({ service, temporal }: Deps): RequestOps {
  return {
    submit: (s, onRecord) =>
      outcome(async () => {
        const { id } = await service.submit({
          principal: asRequester(s.requesterId),
          body: {
            entitlementId: s.entitlementId,
            justification: s.justification,
            ticketRef: s.ticketRef,
            ...(s.subjectId ? { subjectId: s.subjectId } : {}),
            ...(s.durationSeconds !== undefined ? { durationSeconds: s.durationSeconds } : {}),
          },
          httpRequestId: s.channel,
          channel: s.channel,
          onRecord,
        });
        return { id };
      }),

    decide: (d) =>
      outcome(async () => {
        const r = await service.decide({ requestId: d.requestId, approverId: d.approverId, decision: d.decision, comment: d.comment, httpRequestId: d.channel, updateId: d.channel });
        return { status: r.status };
      }),

    setExpiry: (a) =>
      outcome(async () => {
        const row = await service.loadRequest(a.requestId);
        const actor = asRequester(a.actorId);
        if (!isParty(actor, row)) throw forbidden('only the requester or the subject may change the end date');
        if (row.status !== 'active') throw conflict('not_active', `request is ${row.status}`);
        const ms = a.expiresAt.getTime() - Date.now();
        if (ms <= 0) throw conflict('in_the_past', 'the new end date is in the past; to end access now, reject the ticket');
        const current = await temporal.workflow.getHandle(row.workflowId).query(stateQuery);
        if (current.expiresAt && a.expiresAt.getTime() < Date.parse(current.expiresAt)) {
          const handle = temporal.workflow.getHandle(row.workflowId);
          return sendUpdate((updateId) => handle.executeUpdate(shortenUpdate, { updateId, args: [{ actorId: a.actorId, expiresAt: a.expiresAt.toISOString(), justification: a.justification, httpRequestId: a.channel }] }), a.channel).catch(fromUpdateError);
        }
        const r = await service.extend({ principal: actor, httpRequestId: a.channel }, a.requestId, { durationSeconds: Math.ceil(ms / 1000), justification: a.justification }, a.channel);
        return { expiresAt: r.expiresAt, ...(r.pendingApproval ? { pendingApproval: true } : {}) };
      }),

    adopt: (a) =>
      outcome(async () => {
        // The holder is the lease's subject and, formally, its requester (nobody asked for it);
        // the audit trail names reconciliation as the actor and the request's channel says why.
        const { id } = await service.submit({
          principal: asRequester(a.subjectId),
          body: { entitlementId: a.entitlementId, justification: `found by reconciliation with no grant (finding ${a.findingId}); adopted until its review decides` },
          httpRequestId: `reconciliation:${a.runId}`,
          channel: `reconciliation:${a.runId}`,
          adopted: { from: 'reconciliation', findingId: a.findingId },
          actor: { actorType: 'workflow', actorId: 'reconciliationWorkflow' },
        });
        return { id };
      }),

    revokeForTicket: (a) =>
      outcome(() =>
        // The desk, not the person, is the authority here: the ticket that justified the access
        // is gone. The revocation is attested as the desk's (client `service-desk/<name>`).
        service.revoke({ principal: { tokenId: 'service-desk', identityId: null, clientName: `service-desk/${a.deskName}`, roles: ['operator'] }, httpRequestId: a.channel }, a.requestId, {
          reason: 'ticket',
          comment: `ticket closed on the desk by ${a.deskActor}`,
        }),
      ),
  };
}
