// Package topology puts stand-ins for the cluster topology views of Amazon Aurora and RDS
// Multi-AZ DB clusters inside the harness's real servers, filled from the real replication
// state, so that a client discovers a cluster the way it would on AWS:
//
//   - Aurora PostgreSQL: aurora_replica_status() and aurora_db_instance_identifier()
//     (https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/aurora_replica_status.html).
//   - Multi-AZ DB cluster, PostgreSQL: rds_tools.show_topology(), rds_tools.dbi_resource_id(),
//     rds_tools.multi_az_db_cluster_source_dbi_resource_id() (the rds_tools extension; AWS
//     documents it through the AWS Advanced JDBC Wrapper's "Enhanced Support for Amazon RDS
//     Multi-AZ DB Cluster", docs/using-the-jdbc-driver/SupportForRDSMultiAzDBCluster.md, whose
//     queries these answer).
//   - Aurora MySQL: information_schema.replica_host_status (SERVER_ID, SESSION_ID =
//     'MASTER_SESSION_ID' for the writer, LAST_UPDATE_TIMESTAMP, REPLICA_LAG_IN_MILLISECONDS,
//     ...; "Aurora MySQL–specific information_schema tables",
//     https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/AuroraMySQL.Reference.ISTables.html),
//     as a same-shaped view in a schema of the caller's choosing (MariaDB refuses objects in
//     information_schema), and @@aurora_server_id as the function SCHEMA.aurora_server_id().
//   - Multi-AZ DB cluster, MySQL: mysql.rds_topology (id = @@server_id, endpoint, port).
//
// What is real and what is simulated is listed in test/harness/README.md.
package topology

import (
	"context"
	"crypto/md5"
	"fmt"
	"strings"

	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
)

// Instance is one DB instance of a simulated cluster as AWS names it.
type Instance struct {
	// ID is the DB instance identifier (Aurora's server_id, "orders-1").
	ID string
	// Endpoint is the instance endpoint's host name and Port its port, what a client
	// connects to (the RDS stand-in's TLS name and token host, not the real server).
	Endpoint string
	Port     int
	// ResourceID is the DbiResourceId ("db-" and 26 characters); empty means one derived
	// from ID.
	ResourceID string
}

func (i Instance) resourceID() string {
	if i.ResourceID != "" {
		return i.ResourceID
	}
	return DefaultResourceID(i.ID)
}

// DefaultResourceID derives a stable DbiResourceId-shaped id from an instance id.
func DefaultResourceID(id string) string {
	return "db-" + strings.ToUpper(fmt.Sprintf("%x", md5.Sum([]byte(id))))[:26]
}

// sessionUUID is a reader's session_id: a UUID, stable per instance.
func sessionUUID(id string) string {
	h := fmt.Sprintf("%x", md5.Sum([]byte("session:"+id)))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// PGMember is an instance and the real server that plays it.
type PGMember struct {
	Instance
	Server *pgserver.Server
}

// pgSchema holds the member list and the survey; it is the harness's, not AWS's.
const pgSchema = "rdsvalet_topology"

// InstallPostgres installs the PostgreSQL stand-ins on writer (the current primary) in each
// of dbs; physical replication carries them to every standby, as it carries the member list.
// Call it again (on the current writer) when the members change. Any role may call the
// functions: they are SECURITY DEFINER and reach each member's real server with dblink.
func InstallPostgres(ctx context.Context, writer *pgserver.Server, dbs []string, members []PGMember) error {
	for _, db := range dbs {
		var b strings.Builder
		b.WriteString(pgInstallSQL)
		b.WriteString("DELETE FROM " + pgSchema + ".instances;\n")
		for _, m := range members {
			fmt.Fprintf(&b, "INSERT INTO %s.instances VALUES (%s, %s, %d, %d, %s, %s);\n", pgSchema,
				lit(m.ID), lit(m.Endpoint), m.Port, m.Server.Port, lit(m.resourceID()), lit(sessionUUID(m.ID)))
		}
		c, err := writer.Connect(ctx, pgserver.Superuser, db)
		if err != nil {
			return err
		}
		_, err = c.Exec(ctx, "BEGIN;\n"+b.String()+"COMMIT;")
		c.Close(context.Background())
		if err != nil {
			return fmt.Errorf("topology: install in %s: %w", db, err)
		}
	}
	return nil
}

func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// The survey asks every member's real server, over dblink as the superuser, for its role
// and replay position; a member that does not answer within a second is left out.
const pgInstallSQL = `
CREATE EXTENSION IF NOT EXISTS dblink;
CREATE SCHEMA IF NOT EXISTS ` + pgSchema + `;
CREATE TABLE IF NOT EXISTS ` + pgSchema + `.instances (
	server_id text PRIMARY KEY,
	endpoint text NOT NULL,
	port int NOT NULL,
	backend_port int NOT NULL UNIQUE,
	dbi_resource_id text NOT NULL,
	session_uuid text NOT NULL
);
GRANT USAGE ON SCHEMA ` + pgSchema + ` TO PUBLIC;
GRANT SELECT ON ` + pgSchema + `.instances TO PUBLIC;

CREATE OR REPLACE FUNCTION ` + pgSchema + `.survey()
RETURNS TABLE (server_id text, in_recovery boolean, lsn pg_lsn, receive_lsn pg_lsn,
	replay_ts timestamptz, observed timestamptz, active_txns bigint, feedback_xmin bigint,
	is_self boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $f$
DECLARE
	m record;
BEGIN
	FOR m IN SELECT i.server_id, i.backend_port FROM ` + pgSchema + `.instances i ORDER BY i.server_id LOOP
		BEGIN
			SELECT m.server_id, r.* , m.backend_port = current_setting('port')::int
			INTO server_id, in_recovery, lsn, receive_lsn, replay_ts, observed, active_txns, feedback_xmin, is_self
			FROM dblink('host=127.0.0.1 port=' || m.backend_port || ' user=postgres dbname=postgres sslmode=disable connect_timeout=1 application_name=topology_standin',
				$q$SELECT pg_is_in_recovery(),
					CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END,
					pg_last_wal_receive_lsn(), pg_last_xact_replay_timestamp(), clock_timestamp(),
					(SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' OR (state = 'active' AND xact_start IS NOT NULL AND backend_type = 'client backend')),
					(SELECT min(backend_xmin::text::bigint) FROM pg_stat_replication)$q$)
				AS r(in_recovery boolean, lsn pg_lsn, receive_lsn pg_lsn, replay_ts timestamptz, observed timestamptz, active_txns bigint, feedback_xmin bigint);
			RETURN NEXT;
		EXCEPTION WHEN OTHERS THEN
			-- not answering: left out, as Aurora drops an instance it cannot see
		END;
	END LOOP;
END
$f$;

-- Aurora PostgreSQL's documented columns; those with no counterpart in PostgreSQL are NULL.
CREATE OR REPLACE FUNCTION public.aurora_replica_status()
RETURNS TABLE (server_id text, session_id text, durable_lsn bigint, highest_lsn_rcvd bigint,
	current_read_lsn bigint, cur_replay_latency_in_usec bigint, active_txns bigint, is_current boolean,
	last_transport_error int, last_error_timestamp timestamptz, last_update_timestamp timestamptz,
	feedback_xmin bigint, feedback_epoch int, replica_lag_in_msec double precision,
	log_stream_speed_in_kib_per_second double precision, log_buffer_sequence_number bigint,
	oldest_read_view_trx_id bigint, oldest_read_view_lsn bigint, pending_read_ios bigint,
	read_ios bigint, iops bigint, cpu double precision)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $f$
	WITH s AS (SELECT * FROM ` + pgSchema + `.survey()),
	w AS (SELECT max(lsn) AS lsn FROM s WHERE NOT in_recovery)
	SELECT s.server_id,
		CASE WHEN NOT s.in_recovery THEN 'MASTER_SESSION_ID' ELSE i.session_uuid END,
		pg_wal_lsn_diff(s.lsn, '0/0')::bigint,
		pg_wal_lsn_diff(COALESCE(s.receive_lsn, s.lsn), '0/0')::bigint,
		pg_wal_lsn_diff(s.lsn, '0/0')::bigint,
		NULL::bigint, s.active_txns, NULL::boolean, NULL::int, NULL::timestamptz,
		-- Aurora PostgreSQL 13.9 and later: NULL for the instance you are connected to.
		CASE WHEN s.is_self THEN NULL ELSE s.observed END,
		s.feedback_xmin, NULL::int,
		CASE
			WHEN NOT s.in_recovery THEN 0
			WHEN w.lsn IS NULL OR s.replay_ts IS NULL THEN NULL
			WHEN s.lsn >= w.lsn THEN 0
			ELSE GREATEST(EXTRACT(EPOCH FROM s.observed - s.replay_ts)::float8 * 1000, 0)
		END,
		NULL::float8, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::float8
	FROM s JOIN ` + pgSchema + `.instances i USING (server_id) CROSS JOIN w
	ORDER BY s.server_id
$f$;

CREATE OR REPLACE FUNCTION public.aurora_db_instance_identifier() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $f$
	SELECT server_id FROM ` + pgSchema + `.instances WHERE backend_port = current_setting('port')::int
$f$;

CREATE SCHEMA IF NOT EXISTS rds_tools;
GRANT USAGE ON SCHEMA rds_tools TO PUBLIC;

-- The cluster's instances as configured, whatever their state.
CREATE OR REPLACE FUNCTION rds_tools.show_topology(client text DEFAULT NULL)
RETURNS TABLE (id text, endpoint text, port int)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $f$
	SELECT dbi_resource_id, endpoint, port FROM ` + pgSchema + `.instances ORDER BY server_id
$f$;

CREATE OR REPLACE FUNCTION rds_tools.dbi_resource_id() RETURNS TABLE (dbi_resource_id text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $f$
	SELECT i.dbi_resource_id FROM ` + pgSchema + `.instances i WHERE i.backend_port = current_setting('port')::int
$f$;

-- On a reader: the instance it replicates from, read from its own primary_conninfo. On the
-- writer: no row.
CREATE OR REPLACE FUNCTION rds_tools.multi_az_db_cluster_source_dbi_resource_id()
RETURNS TABLE (multi_az_db_cluster_source_dbi_resource_id text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $f$
	SELECT i.dbi_resource_id FROM ` + pgSchema + `.instances i
	WHERE pg_is_in_recovery()
	AND i.backend_port = substring(current_setting('primary_conninfo') FROM 'port=''?([0-9]+)')::int
$f$;
`
