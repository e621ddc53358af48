-- Latest forecast per series: the champion model's P10/P50/P90 for each day of the newest run's horizon,
-- with the champion's backtest accuracy. The join on latest_run's one row reads only that run's partitions.
CREATE OR REPLACE VIEW latest_forecasts AS
WITH latest_metrics AS (
    SELECT m.*
    FROM model_metrics AS m
    JOIN latest_run AS l ON m.run_date = l.run_date
)
SELECT
    f.run_date,
    f.server_id,
    f.metric,
    f.model AS champion,
    f.ds,
    f.horizon_step,
    f.p10,
    f.p50,
    f.p90,
    m.mae AS backtest_mae,
    m.coverage AS backtest_coverage
FROM forecasts AS f
JOIN latest_run AS l ON f.run_date = l.run_date
LEFT JOIN latest_metrics AS m
    ON m.run_date = f.run_date AND m.server_id = f.server_id AND m.metric = f.metric AND m.model = f.model
WHERE f.is_champion
