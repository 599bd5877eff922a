CREATE TYPE "public"."sentinel_finding_kind" AS ENUM('expired_not_revoked', 'stuck_granting', 'removal_overdue', 'terminated_with_grant', 'unjustified_member', 'workflow_task_failed', 'workflow_ended');--> statement-breakpoint
ALTER TYPE "public"."revoke_reason" ADD VALUE 'sentinel';--> statement-breakpoint
CREATE TABLE "sentinel_finding" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"kind" "sentinel_finding_kind" NOT NULL,
	"subject_key" text NOT NULL,
	"grant_id" uuid,
	"entitlement_id" uuid,
	"identity_id" uuid,
	"detail" text,
	"detected_at" timestamp with time zone DEFAULT now() NOT NULL,
	"alerted_at" timestamp with time zone,
	"remediated_at" timestamp with time zone,
	"resolved_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "sentinel_finding" ADD CONSTRAINT "sentinel_finding_grant_id_grant_id_fk" FOREIGN KEY ("grant_id") REFERENCES "public"."grant"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sentinel_finding" ADD CONSTRAINT "sentinel_finding_entitlement_id_entitlement_id_fk" FOREIGN KEY ("entitlement_id") REFERENCES "public"."entitlement"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "sentinel_finding" ADD CONSTRAINT "sentinel_finding_identity_id_identity_id_fk" FOREIGN KEY ("identity_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "sentinel_finding_open_uq" ON "sentinel_finding" USING btree ("kind","subject_key") WHERE resolved_at is null;--> statement-breakpoint
CREATE UNIQUE INDEX "access_request_open_uq" ON "access_request" USING btree ("subject_id","entitlement_id") WHERE status in ('pending_approval','scheduled','granting','active','revoking','revocation_unverified');