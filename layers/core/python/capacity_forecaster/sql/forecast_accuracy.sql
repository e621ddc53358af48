-- Forecast accuracy over time: each run's champion forecasts scored against the actuals that have arrived since,
-- per run date and metric (MAE in points, share of actuals inside the P10-P90 band, bias of P50), for the runs
-- of latest_run's window (its joins read only those runs' and days' partitions).
CREATE OR REPLACE VIEW forecast_accuracy AS
SELECT
    f.run_date,
    f.metric,
    count(*) AS scored_days,
    count(DISTINCT f.server_id) AS servers,
    avg(abs(d.p95 - f.p50)) AS mae,
    avg(d.p95 - f.p50) AS bias,
    avg(CASE WHEN d.p95 BETWEEN f.p10 AND f.p90 THEN 1.0 ELSE 0.0 END) AS coverage_p10_p90,
    max(f.horizon_step) AS max_horizon_step
FROM forecasts AS f
JOIN latest_run AS l ON f.run_date >= l.window_start AND f.run_date <= l.run_date
JOIN metrics_daily AS d
    ON d.server_id = f.server_id AND d.metric = f.metric AND d.dt = f.ds AND d.dt >= l.window_start
WHERE f.is_champion AND NOT d.imputed
GROUP BY f.run_date, f.metric
