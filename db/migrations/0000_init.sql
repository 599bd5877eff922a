CREATE TYPE "public"."api_role" AS ENUM('hr_system', 'requester', 'approver', 'operator', 'auditor');--> statement-breakpoint
CREATE TYPE "public"."approval_status" AS ENUM('pending', 'approved', 'rejected', 'expired', 'closed');--> statement-breakpoint
CREATE TYPE "public"."grant_source" AS ENUM('request', 'birthright', 'break_glass');--> statement-breakpoint
CREATE TYPE "public"."grant_status" AS ENUM('granting', 'active', 'revoking', 'revocation_unverified', 'revoked', 'failed');--> statement-breakpoint
CREATE TYPE "public"."identity_kind" AS ENUM('employee', 'contractor', 'service_account', 'api_key', 'workload', 'ai_agent');--> statement-breakpoint
CREATE TYPE "public"."identity_status" AS ENUM('active', 'suspended', 'terminated');--> statement-breakpoint
CREATE TYPE "public"."request_status" AS ENUM('pending_approval', 'rejected', 'expired_unapproved', 'cancelled', 'scheduled', 'granting', 'active', 'revoking', 'revocation_unverified', 'revoked', 'failed');--> statement-breakpoint
CREATE TYPE "public"."revoke_reason" AS ENUM('expired', 'leaver', 'mover', 'review', 'manual', 'reconciliation');--> statement-breakpoint
CREATE TYPE "public"."risk_tier" AS ENUM('low', 'medium', 'high', 'privileged');--> statement-breakpoint
CREATE TABLE "access_request" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"requester_id" uuid NOT NULL,
	"subject_id" uuid NOT NULL,
	"entitlement_id" uuid NOT NULL,
	"justification" text NOT NULL,
	"requested_duration_seconds" integer NOT NULL,
	"start_at" timestamp with time zone,
	"ticket_ref" text,
	"status" "request_status" DEFAULT 'pending_approval' NOT NULL,
	"workflow_id" text NOT NULL,
	"policy_version" text,
	"failure_reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"decided_at" timestamp with time zone,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "api_token" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"token_hash" text NOT NULL,
	"identity_id" uuid,
	"client_name" text,
	"roles" "api_role"[] NOT NULL,
	"description" text,
	"created_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	CONSTRAINT "api_token_one_principal" CHECK (("api_token"."identity_id" is null) <> ("api_token"."client_name" is null))
);
--> statement-breakpoint
CREATE TABLE "approval" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"request_id" uuid NOT NULL,
	"stage" integer NOT NULL,
	"approver_id" uuid NOT NULL,
	"status" "approval_status" DEFAULT 'pending' NOT NULL,
	"comment" text,
	"policy_version" text NOT NULL,
	"due_at" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"decided_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "audit_event" (
	"seq" bigint PRIMARY KEY NOT NULL,
	"idempotency_key" text NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"actor_type" text NOT NULL,
	"actor_id" text NOT NULL,
	"action" text NOT NULL,
	"request_id" uuid,
	"grant_id" uuid,
	"identity_id" uuid,
	"reason" text,
	"policy_version" text,
	"data" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"prev_hash" text NOT NULL,
	"hash" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "entitlement" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"system_id" uuid NOT NULL,
	"name" text NOT NULL,
	"description" text,
	"resource" text NOT NULL,
	"owner_id" uuid NOT NULL,
	"risk_tier" "risk_tier" DEFAULT 'medium' NOT NULL,
	"default_duration_seconds" integer NOT NULL,
	"max_duration_seconds" integer NOT NULL,
	"requestable" boolean DEFAULT true NOT NULL,
	"approval_policy" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"conditions" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"sod_conflicts" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"break_glass_allowed" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "entitlement_durations" CHECK ("entitlement"."default_duration_seconds" > 0 and "entitlement"."default_duration_seconds" <= "entitlement"."max_duration_seconds")
);
--> statement-breakpoint
CREATE TABLE "grant" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"identity_id" uuid NOT NULL,
	"entitlement_id" uuid NOT NULL,
	"request_id" uuid,
	"source" "grant_source" NOT NULL,
	"status" "grant_status" DEFAULT 'granting' NOT NULL,
	"target_changed" boolean,
	"granted_at" timestamp with time zone,
	"grant_verified_at" timestamp with time zone,
	"expires_at" timestamp with time zone,
	"revoke_requested_at" timestamp with time zone,
	"revoke_reason" "revoke_reason",
	"revoked_by" text,
	"revoked_at" timestamp with time zone,
	"removal_verified_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "identity" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"kind" "identity_kind" NOT NULL,
	"username" text NOT NULL,
	"display_name" text NOT NULL,
	"email" text,
	"external_id" text,
	"status" "identity_status" DEFAULT 'active' NOT NULL,
	"manager_id" uuid,
	"department" text,
	"location" text,
	"employment_type" text,
	"owner_id" uuid,
	"sponsor_id" uuid,
	"end_date" timestamp with time zone,
	"attributes" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "identity_nonhuman_has_owner" CHECK ("identity"."kind" in ('employee','contractor') or "identity"."owner_id" is not null)
);
--> statement-breakpoint
CREATE TABLE "system" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"kind" text NOT NULL,
	"config" jsonb NOT NULL,
	"secret_refs" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"owner_id" uuid NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "access_request" ADD CONSTRAINT "access_request_requester_id_identity_id_fk" FOREIGN KEY ("requester_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "access_request" ADD CONSTRAINT "access_request_subject_id_identity_id_fk" FOREIGN KEY ("subject_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "access_request" ADD CONSTRAINT "access_request_entitlement_id_entitlement_id_fk" FOREIGN KEY ("entitlement_id") REFERENCES "public"."entitlement"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "api_token" ADD CONSTRAINT "api_token_identity_id_identity_id_fk" FOREIGN KEY ("identity_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "approval" ADD CONSTRAINT "approval_request_id_access_request_id_fk" FOREIGN KEY ("request_id") REFERENCES "public"."access_request"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "approval" ADD CONSTRAINT "approval_approver_id_identity_id_fk" FOREIGN KEY ("approver_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "entitlement" ADD CONSTRAINT "entitlement_system_id_system_id_fk" FOREIGN KEY ("system_id") REFERENCES "public"."system"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "entitlement" ADD CONSTRAINT "entitlement_owner_id_identity_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "grant" ADD CONSTRAINT "grant_identity_id_identity_id_fk" FOREIGN KEY ("identity_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "grant" ADD CONSTRAINT "grant_entitlement_id_entitlement_id_fk" FOREIGN KEY ("entitlement_id") REFERENCES "public"."entitlement"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "grant" ADD CONSTRAINT "grant_request_id_access_request_id_fk" FOREIGN KEY ("request_id") REFERENCES "public"."access_request"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "system" ADD CONSTRAINT "system_owner_id_identity_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "access_request_subject_idx" ON "access_request" USING btree ("subject_id");--> statement-breakpoint
CREATE INDEX "access_request_requester_idx" ON "access_request" USING btree ("requester_id");--> statement-breakpoint
CREATE UNIQUE INDEX "access_request_workflow_uq" ON "access_request" USING btree ("workflow_id");--> statement-breakpoint
CREATE UNIQUE INDEX "api_token_hash_uq" ON "api_token" USING btree ("token_hash");--> statement-breakpoint
CREATE UNIQUE INDEX "approval_request_stage_approver_uq" ON "approval" USING btree ("request_id","stage","approver_id");--> statement-breakpoint
CREATE INDEX "approval_approver_status_idx" ON "approval" USING btree ("approver_id","status");--> statement-breakpoint
CREATE UNIQUE INDEX "audit_event_idempotency_uq" ON "audit_event" USING btree ("idempotency_key");--> statement-breakpoint
CREATE INDEX "audit_event_request_idx" ON "audit_event" USING btree ("request_id");--> statement-breakpoint
CREATE INDEX "audit_event_grant_idx" ON "audit_event" USING btree ("grant_id");--> statement-breakpoint
CREATE UNIQUE INDEX "entitlement_system_resource_uq" ON "entitlement" USING btree ("system_id","resource");--> statement-breakpoint
CREATE INDEX "grant_identity_status_idx" ON "grant" USING btree ("identity_id","status");--> statement-breakpoint
CREATE INDEX "grant_entitlement_idx" ON "grant" USING btree ("entitlement_id");--> statement-breakpoint
CREATE UNIQUE INDEX "grant_request_uq" ON "grant" USING btree ("request_id");--> statement-breakpoint
CREATE UNIQUE INDEX "identity_username_uq" ON "identity" USING btree ("username");--> statement-breakpoint
CREATE UNIQUE INDEX "identity_external_id_uq" ON "identity" USING btree ("external_id");--> statement-breakpoint
CREATE UNIQUE INDEX "system_name_uq" ON "system" USING btree ("name");