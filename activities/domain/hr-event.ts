import { z } from 'zod';

// The HR event as the webhook carries it: validated by the API at intake and again by the
// activity that applies it from the inbox, so both sides share this one definition.

/** The worker as an HR system describes it (Workday-, SuccessFactors-, BambooHR-style feeds map onto this). */
export const hrWorker = z.strictObject({
  /** HR worker id (becomes identity.external_id). */
  id: z.string().min(1).max(128),
  username: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/)
    .optional(),
  displayName: z.string().trim().min(1).max(200).optional(),
  email: z.email().optional(),
  kind: z.enum(['employee', 'contractor']).optional(),
  department: z.string().max(128).optional(),
  location: z.string().max(128).optional(),
  employmentType: z.string().max(64).optional(),
  jobCode: z.string().max(64).optional(),
  /** The manager's HR worker id. */
  managerId: z.string().max(128).optional(),
  sponsorId: z.string().max(128).optional(),
  endDate: z.iso.datetime({ offset: true }).nullable().optional(),
});

export const hrEventBody = z.strictObject({
  type: z.enum(['joiner', 'mover', 'leaver', 'rehire', 'update']),
  /** Per-worker, strictly increasing in HR's own order: older events arriving late are ignored. */
  sequence: z.number().int().nonnegative(),
  effectiveAt: z.iso.datetime({ offset: true }).optional(),
  worker: hrWorker,
});
export type HrEventBody = z.infer<typeof hrEventBody>;
