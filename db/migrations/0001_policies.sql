CREATE TABLE "approver_group_member" (
	"group_id" uuid NOT NULL,
	"identity_id" uuid NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "approver_group" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "approval_delegation" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"delegator_id" uuid NOT NULL,
	"delegate_id" uuid NOT NULL,
	"starts_at" timestamp with time zone NOT NULL,
	"ends_at" timestamp with time zone NOT NULL,
	"reason" text,
	"created_by" text NOT NULL,
	"revoked_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "approval_delegation_period" CHECK ("approval_delegation"."starts_at" < "approval_delegation"."ends_at"),
	CONSTRAINT "approval_delegation_not_self" CHECK ("approval_delegation"."delegator_id" <> "approval_delegation"."delegate_id")
);
--> statement-breakpoint
CREATE TABLE "policy_version" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "policy_version_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"version" text NOT NULL,
	"document" jsonb NOT NULL,
	"source" text NOT NULL,
	"created_by" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "approval" ADD COLUMN "stage_name" text DEFAULT 'owner' NOT NULL;--> statement-breakpoint
ALTER TABLE "approval" ADD COLUMN "on_behalf_of" uuid;--> statement-breakpoint
ALTER TABLE "entitlement" ADD COLUMN "attributes" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "approver_group_member" ADD CONSTRAINT "approver_group_member_group_id_approver_group_id_fk" FOREIGN KEY ("group_id") REFERENCES "public"."approver_group"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "approver_group_member" ADD CONSTRAINT "approver_group_member_identity_id_identity_id_fk" FOREIGN KEY ("identity_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "approval_delegation" ADD CONSTRAINT "approval_delegation_delegator_id_identity_id_fk" FOREIGN KEY ("delegator_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "approval_delegation" ADD CONSTRAINT "approval_delegation_delegate_id_identity_id_fk" FOREIGN KEY ("delegate_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "approver_group_member_uq" ON "approver_group_member" USING btree ("group_id","identity_id");--> statement-breakpoint
CREATE UNIQUE INDEX "approver_group_name_uq" ON "approver_group" USING btree ("name");--> statement-breakpoint
CREATE INDEX "approval_delegation_delegator_idx" ON "approval_delegation" USING btree ("delegator_id");--> statement-breakpoint
CREATE INDEX "policy_version_version_idx" ON "policy_version" USING btree ("version");--> statement-breakpoint
ALTER TABLE "approval" ADD CONSTRAINT "approval_on_behalf_of_identity_id_fk" FOREIGN KEY ("on_behalf_of") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;