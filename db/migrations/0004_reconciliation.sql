CREATE TYPE "public"."finding_kind" AS ENUM('orphaned_account', 'unauthorized_access', 'failed_revocation', 'missing_grant');--> statement-breakpoint
CREATE TYPE "public"."finding_status" AS ENUM('open', 'remediated', 'resolved');--> statement-breakpoint
CREATE TABLE "reconciliation_finding" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"run_id" text NOT NULL,
	"system_id" uuid NOT NULL,
	"entitlement_id" uuid NOT NULL,
	"kind" "finding_kind" NOT NULL,
	"account" text NOT NULL,
	"identity_id" uuid,
	"grant_id" uuid,
	"status" "finding_status" DEFAULT 'open' NOT NULL,
	"detail" text,
	"detected_at" timestamp with time zone DEFAULT now() NOT NULL,
	"remediated_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "reconciliation_finding" ADD CONSTRAINT "reconciliation_finding_system_id_system_id_fk" FOREIGN KEY ("system_id") REFERENCES "public"."system"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "reconciliation_finding" ADD CONSTRAINT "reconciliation_finding_entitlement_id_entitlement_id_fk" FOREIGN KEY ("entitlement_id") REFERENCES "public"."entitlement"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "reconciliation_finding" ADD CONSTRAINT "reconciliation_finding_identity_id_identity_id_fk" FOREIGN KEY ("identity_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "reconciliation_finding" ADD CONSTRAINT "reconciliation_finding_grant_id_grant_id_fk" FOREIGN KEY ("grant_id") REFERENCES "public"."grant"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "reconciliation_finding_system_idx" ON "reconciliation_finding" USING btree ("system_id","status");--> statement-breakpoint
CREATE UNIQUE INDEX "reconciliation_finding_open_uq" ON "reconciliation_finding" USING btree ("entitlement_id","account","kind") WHERE status = 'open';