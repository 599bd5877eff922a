CREATE TYPE "public"."review_campaign_kind" AS ENUM('campaign', 'micro');--> statement-breakpoint
CREATE TYPE "public"."review_campaign_status" AS ENUM('open', 'closing', 'closed', 'cancelled');--> statement-breakpoint
CREATE TYPE "public"."review_item_status" AS ENUM('pending', 'kept', 'revoked', 'skipped');--> statement-breakpoint
CREATE TYPE "public"."review_trigger" AS ENUM('api', 'schedule', 'mover', 'unauthorized_access', 'review_interval', 'policy_change', 'break_glass');--> statement-breakpoint
CREATE TABLE "break_glass_challenge" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"secret_hash" text NOT NULL,
	"invoker_id" uuid NOT NULL,
	"entitlement_id" uuid NOT NULL,
	"duration_seconds" integer NOT NULL,
	"incident_ref" text NOT NULL,
	"justification" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"confirmed_at" timestamp with time zone,
	"request_id" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "review_campaign" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"kind" "review_campaign_kind" NOT NULL,
	"trigger" "review_trigger" NOT NULL,
	"definition" jsonb NOT NULL,
	"status" "review_campaign_status" DEFAULT 'open' NOT NULL,
	"due_at" timestamp with time zone NOT NULL,
	"workflow_id" text NOT NULL,
	"policy_version" text,
	"created_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"decided_at" timestamp with time zone,
	"closed_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "review_item" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"campaign_id" uuid NOT NULL,
	"grant_id" uuid NOT NULL,
	"identity_id" uuid NOT NULL,
	"entitlement_id" uuid NOT NULL,
	"risk_tier" "risk_tier" NOT NULL,
	"reviewer_id" uuid NOT NULL,
	"assigned_reviewer_id" uuid NOT NULL,
	"status" "review_item_status" DEFAULT 'pending' NOT NULL,
	"decided_by" text,
	"decided_at" timestamp with time zone,
	"comment" text,
	"new_expires_at" timestamp with time zone,
	"flagged" boolean DEFAULT false NOT NULL,
	"reminded_at" timestamp with time zone,
	"reminders" integer DEFAULT 0 NOT NULL,
	"escalated_at" timestamp with time zone,
	"provenance" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"last_used_at" timestamp with time zone,
	"removal_verified_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "review_item_not_self" CHECK ("review_item"."reviewer_id" <> "review_item"."identity_id" and "review_item"."assigned_reviewer_id" <> "review_item"."identity_id"),
	CONSTRAINT "review_item_decided" CHECK (("review_item"."status" = 'pending') = ("review_item"."decided_at" is null))
);
--> statement-breakpoint
CREATE TABLE "web_session" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"secret_hash" text NOT NULL,
	"token_id" uuid NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"last_seen_at" timestamp with time zone,
	"ended_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "entitlement" ADD COLUMN "break_glass" jsonb;--> statement-breakpoint
ALTER TABLE "break_glass_challenge" ADD CONSTRAINT "break_glass_challenge_invoker_id_identity_id_fk" FOREIGN KEY ("invoker_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "break_glass_challenge" ADD CONSTRAINT "break_glass_challenge_entitlement_id_entitlement_id_fk" FOREIGN KEY ("entitlement_id") REFERENCES "public"."entitlement"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "break_glass_challenge" ADD CONSTRAINT "break_glass_challenge_request_id_access_request_id_fk" FOREIGN KEY ("request_id") REFERENCES "public"."access_request"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "review_item" ADD CONSTRAINT "review_item_campaign_id_review_campaign_id_fk" FOREIGN KEY ("campaign_id") REFERENCES "public"."review_campaign"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "review_item" ADD CONSTRAINT "review_item_grant_id_grant_id_fk" FOREIGN KEY ("grant_id") REFERENCES "public"."grant"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "review_item" ADD CONSTRAINT "review_item_identity_id_identity_id_fk" FOREIGN KEY ("identity_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "review_item" ADD CONSTRAINT "review_item_entitlement_id_entitlement_id_fk" FOREIGN KEY ("entitlement_id") REFERENCES "public"."entitlement"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "review_item" ADD CONSTRAINT "review_item_reviewer_id_identity_id_fk" FOREIGN KEY ("reviewer_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "review_item" ADD CONSTRAINT "review_item_assigned_reviewer_id_identity_id_fk" FOREIGN KEY ("assigned_reviewer_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "web_session" ADD CONSTRAINT "web_session_token_id_api_token_id_fk" FOREIGN KEY ("token_id") REFERENCES "public"."api_token"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "break_glass_challenge_secret_uq" ON "break_glass_challenge" USING btree ("secret_hash");--> statement-breakpoint
CREATE INDEX "break_glass_challenge_invoker_idx" ON "break_glass_challenge" USING btree ("invoker_id","created_at");--> statement-breakpoint
CREATE INDEX "review_campaign_status_idx" ON "review_campaign" USING btree ("status");--> statement-breakpoint
CREATE UNIQUE INDEX "review_campaign_workflow_uq" ON "review_campaign" USING btree ("workflow_id");--> statement-breakpoint
CREATE UNIQUE INDEX "review_item_campaign_grant_uq" ON "review_item" USING btree ("campaign_id","grant_id");--> statement-breakpoint
CREATE INDEX "review_item_reviewer_idx" ON "review_item" USING btree ("reviewer_id","status");--> statement-breakpoint
CREATE INDEX "review_item_campaign_status_idx" ON "review_item" USING btree ("campaign_id","status");--> statement-breakpoint
CREATE INDEX "review_item_grant_idx" ON "review_item" USING btree ("grant_id");--> statement-breakpoint
CREATE UNIQUE INDEX "web_session_secret_uq" ON "web_session" USING btree ("secret_hash");