CREATE TYPE "public"."ticket_link_state" AS ENUM('linked', 'refused', 'closed');--> statement-breakpoint
CREATE TABLE "desk_outbox" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "desk_outbox_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"link_id" uuid NOT NULL,
	"source" text NOT NULL,
	"audit_seq" bigint,
	"text" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"delivered_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "service_desk" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"kind" text NOT NULL,
	"config" jsonb NOT NULL,
	"secret_refs" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"owner_id" uuid NOT NULL,
	"cursor" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "ticket_link" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"desk_id" uuid NOT NULL,
	"ticket_ref" text NOT NULL,
	"request_id" uuid,
	"state" "ticket_link_state" NOT NULL,
	"refusal" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"closed_at" timestamp with time zone,
	"delivered_through" bigint DEFAULT 0 NOT NULL,
	"pending_marker" text,
	"pending_through" bigint
);
--> statement-breakpoint
ALTER TABLE "desk_outbox" ADD CONSTRAINT "desk_outbox_link_id_ticket_link_id_fk" FOREIGN KEY ("link_id") REFERENCES "public"."ticket_link"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "service_desk" ADD CONSTRAINT "service_desk_owner_id_identity_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."identity"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ticket_link" ADD CONSTRAINT "ticket_link_desk_id_service_desk_id_fk" FOREIGN KEY ("desk_id") REFERENCES "public"."service_desk"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ticket_link" ADD CONSTRAINT "ticket_link_request_id_access_request_id_fk" FOREIGN KEY ("request_id") REFERENCES "public"."access_request"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "desk_outbox_source_uq" ON "desk_outbox" USING btree ("link_id","source");--> statement-breakpoint
CREATE INDEX "desk_outbox_pending_idx" ON "desk_outbox" USING btree ("link_id","id") WHERE delivered_at is null;--> statement-breakpoint
CREATE UNIQUE INDEX "service_desk_name_uq" ON "service_desk" USING btree ("name");--> statement-breakpoint
CREATE UNIQUE INDEX "ticket_link_ticket_uq" ON "ticket_link" USING btree ("desk_id","ticket_ref");--> statement-breakpoint
CREATE UNIQUE INDEX "ticket_link_request_uq" ON "ticket_link" USING btree ("request_id") WHERE request_id is not null;