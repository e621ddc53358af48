-- The newest risk register joined with the server inventory, most urgent first (only its partition is read).
CREATE OR REPLACE VIEW risk_servers AS
SELECT
    r.run_date,
    r.server_id,
    s.application,
    s.environment,
    s.datacenter,
    s.instance_type,
    s.cores,
    s.memory_gib,
    s.monthly_cost,
    r.metric,
    r.severity,
    r.finding,
    r.threshold,
    r.last_p95,
    r.already_breaching,
    r.breach_date_p50,
    r.days_to_breach_p50,
    r.breach_date_p90,
    r.days_to_breach_p90,
    r.breach_probability,
    r.likely_breach_date,
    r.peak_p50,
    r.peak_date,
    r.peak_p90,
    r.seasonal_peak,
    r.seasonal_peak_kind,
    r.seasonal_peak_dates,
    r.short_history,
    r.history_days,
    r.model,
    CASE r.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END AS severity_rank
FROM risk_register AS r
JOIN latest_run AS l ON r.run_date = l.run_date
LEFT JOIN servers AS s ON s.server_id = r.server_id
