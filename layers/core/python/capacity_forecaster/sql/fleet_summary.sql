-- Fleet summary by application and data centre for the newest run: servers, cost, series at risk by severity,
-- findings, and what the consolidation plan frees and saves.
CREATE OR REPLACE VIEW fleet_summary AS
WITH latest_risk AS (
    SELECT r.*
    FROM risk_register AS r
    JOIN latest_run AS l ON r.run_date = l.run_date
),
latest_plan AS (
    SELECT c.*
    FROM consolidation AS c
    JOIN latest_run AS l ON c.run_date = l.run_date
),
per_server AS (
    SELECT
        server_id,
        max(CASE WHEN severity = 'critical' THEN 1 ELSE 0 END) AS has_critical,
        max(CASE WHEN severity IN ('critical', 'high') THEN 1 ELSE 0 END) AS has_high,
        CAST(sum(CASE WHEN severity = 'critical' THEN 1 ELSE 0 END) AS BIGINT) AS critical_series,
        CAST(sum(CASE WHEN severity = 'high' THEN 1 ELSE 0 END) AS BIGINT) AS high_series,
        CAST(sum(CASE WHEN severity = 'medium' THEN 1 ELSE 0 END) AS BIGINT) AS medium_series,
        max(finding) AS finding
    FROM latest_risk
    GROUP BY server_id
)
SELECT
    s.application,
    s.datacenter,
    count(*) AS servers,
    CAST(sum(s.cores) AS BIGINT) AS cores,
    round(sum(s.monthly_cost), 2) AS monthly_cost,
    CAST(sum(coalesce(p.has_critical, 0)) AS BIGINT) AS servers_critical,
    CAST(sum(coalesce(p.has_high, 0)) AS BIGINT) AS servers_at_risk,
    CAST(sum(coalesce(p.critical_series, 0)) AS BIGINT) AS critical_series,
    CAST(sum(coalesce(p.high_series, 0)) AS BIGINT) AS high_series,
    CAST(sum(coalesce(p.medium_series, 0)) AS BIGINT) AS medium_series,
    CAST(sum(CASE WHEN p.finding = 'under-provisioned' THEN 1 ELSE 0 END) AS BIGINT) AS under_provisioned,
    CAST(sum(CASE WHEN p.finding = 'over-provisioned' THEN 1 ELSE 0 END) AS BIGINT) AS over_provisioned,
    CAST(sum(CASE WHEN c.action = 'consolidate' THEN 1 ELSE 0 END) AS BIGINT) AS servers_freed,
    CAST(sum(CASE WHEN c.action = 'downsize' THEN 1 ELSE 0 END) AS BIGINT) AS servers_downsized,
    round(sum(coalesce(c.monthly_savings, 0)), 2) AS monthly_savings
FROM servers AS s
LEFT JOIN per_server AS p ON p.server_id = s.server_id
LEFT JOIN latest_plan AS c ON c.server_id = s.server_id
GROUP BY s.application, s.datacenter
