CREATE TYPE "public"."credential_kind" AS ENUM('password', 'ssh_certificate');--> statement-breakpoint
CREATE TYPE "public"."credential_status" AS ENUM('active', 'superseded', 'revoked');--> statement-breakpoint
CREATE TABLE "credential" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"grant_id" uuid NOT NULL,
	"identity_id" uuid NOT NULL,
	"owner_id" uuid NOT NULL,
	"kind" "credential_kind" NOT NULL,
	"target_ref" text NOT NULL,
	"status" "credential_status" DEFAULT 'active' NOT NULL,
	"sealed" text,
	"issued_at" timestamp with time zone DEFAULT now() NOT NULL,
	"not_after" timestamp with time zone NOT NULL,
	"delivered_at" timestamp with time zone,
	"delivered_to" uuid,
	"ended_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "credential" ADD CONSTRAINT "credential_grant_id_grant_id_fk" FOREIGN KEY ("grant_id") REFERENCES "public"."grant"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "credential" ADD CONSTRAINT "credential_identity_id_identity_id_fk" FOREIGN KEY ("identity_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "credential" ADD CONSTRAINT "credential_owner_id_identity_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "credential_grant_idx" ON "credential" USING btree ("grant_id","issued_at");--> statement-breakpoint
CREATE INDEX "credential_owner_idx" ON "credential" USING btree ("owner_id");