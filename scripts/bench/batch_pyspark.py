"""The batch enricher's tenant-day in PySpark local[2]: the baseline of `batch-bench`.

Reads the same raw Parquet files as `batch-enricher reprocess` and does the same job with the
same rules (crates/batch-enricher/src/raw.rs, enrich.rs, trusted.rs; sightline-event's bot
detector; stream-processor's order rule):

1. window filter on event time, dedupe by (site_id, message_id) keeping the copy received
   first, drop rows without ids, with an unknown type or site;
2. enrichment the daily figures depend on: the bot verdict (the same token lists and, for
   crawlers, uap-core's device family `Spider` from the `ua-parser` package, computed once per
   distinct user agent and broadcast), pageviews, orders (`revenue` and `currency` of track
   properties, in micros, the currency falling back to the site's);
3. sessionisation: per site and visitor in time order, a visit ends after 30 minutes without
   a page, screen or track event of a human;
4. writes `events` (the day's events in each site's local day), `sessions` (visits that
   started in the day) and `daily_metrics` (one row per site) under --out.

It does not derive browser, OS, device, referrer source or UTM columns (no daily figure uses
them), so it does less work than the Rust job. Prints nothing; --timing gets the time spent
after the Spark session started.
"""

import argparse
import json
import string
import time

from pyspark import StorageLevel
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F
from ua_parser import parse_device

SESSION_TIMEOUT_US = 30 * 60 * 1_000_000
TYPES = ["page", "screen", "track", "identify", "group", "alias"]
# sightline-event/src/bot.rs, in its order.
HEADLESS_TOKENS = ["headlesschrome", "headless", "phantomjs", "slimerjs", "puppeteer",
                   "playwright", "selenium", "webdriver", "cypress"]
BOT_TOKENS = ["bot", "crawl", "spider", "slurp", "scraper", "archiver", "curl", "wget",
              "python-requests", "python-urllib", "aiohttp", "httpclient", "go-http-client",
              "java/", "okhttp/", "axios/", "node-fetch", "undici", "libwww-perl",
              "guzzlehttp", "scrapy", "httpie", "postmanruntime", "lighthouse", "pagespeed",
              "gtmetrix", "pingdom", "uptime", "statuscake", "site24x7", "newrelicpinger",
              "datadog", "facebookexternalhit", "embedly", "whatsapp/", "preview"]
NOT_BOT_WORDS = ["cubot"]
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def bot_reason(user_agent):
    """`detect_bot` of sightline-event, for one user agent."""
    trimmed = user_agent.strip()
    if not trimmed:
        return "empty_user_agent"
    lower = trimmed.translate(ASCII_LOWER)
    if any(t in lower for t in HEADLESS_TOKENS):
        return "headless_browser"
    device = parse_device(user_agent)
    if device is not None and device.family == "Spider":
        return "crawler"
    for word in NOT_BOT_WORDS:
        lower = lower.replace(word, " ")
    return "known_bot_pattern" if any(t in lower for t in BOT_TOKENS) else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", type=int, required=True)
    parser.add_argument("--from-us", type=int, required=True)
    parser.add_argument("--to-us", type=int, required=True)
    parser.add_argument("--sites", required=True,
                        help="JSON list of {site_id, currency, starts_us, ends_us}")
    parser.add_argument("--out", required=True)
    parser.add_argument("--timing", required=True)
    parser.add_argument("--memory", default="8g")
    parser.add_argument("inputs", nargs="+", help="raw/events/tenant=T/date=D folders")
    args = parser.parse_args()

    spark = (SparkSession.builder.master("local[2]").appName("sightline-batch-bench")
             .config("spark.driver.memory", args.memory)
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.shuffle.partitions", "16")
             .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    started = time.perf_counter()
    run(spark, args)
    with open(args.timing, "w") as f:
        json.dump({"job_s": time.perf_counter() - started}, f)
    spark.stop()


def run(spark, args):
    sites = spark.createDataFrame(
        [(s["site_id"], s["currency"], s["starts_us"], s["ends_us"])
         for s in json.loads(args.sites)],
        "site_id long, site_currency string, starts_us long, ends_us long")
    site_ids = [r.site_id for r in sites.collect()]
    base = args.inputs[0].rsplit("/date=", 1)[0]
    t = F.unix_micros("timestamp")
    raw = (spark.read.option("basePath", base).parquet(*args.inputs)
           .where((F.col("tenant_id") == args.tenant) & (t >= args.from_us) & (t < args.to_us)))

    # 1. Dedupe, validate.
    first = Window.partitionBy("site_id", "message_id").orderBy(
        "received_at", "timestamp", "visitor_id")
    unique = raw.withColumn("copy", F.row_number().over(first)).where("copy = 1").drop("copy")
    valid = unique.where((F.col("message_id") != "") & (F.col("visitor_id") != "")
                         & F.col("type").isin(TYPES) & F.col("site_id").isin(site_ids))

    # 2. Enrichment: bots per distinct user agent, pageviews, orders.
    user_agents = [r[0] for r in raw.select(F.coalesce("user_agent", F.lit(""))).distinct()
                   .collect()]
    bots = spark.createDataFrame([(ua, bot_reason(ua)) for ua in user_agents],
                                 "ua string, bot_reason string")
    revenue = F.get_json_object("properties", "$.revenue").cast("double")
    micros = F.round(revenue * 1_000_000.0)
    currency = F.upper(F.trim(F.get_json_object("properties", "$.currency")))
    is_order = ((F.col("type") == "track") & revenue.isNotNull() & ~F.isnan(revenue)
                & (F.abs(micros) < 9.0e18))
    enriched = (valid.withColumn("ua", F.coalesce("user_agent", F.lit("")))
                .join(F.broadcast(bots), "ua", "left")
                .join(F.broadcast(sites), "site_id")
                .withColumn("t_us", t)
                .withColumn("is_pageview", F.col("type").isin("page", "screen"))
                .withColumn("sessionable", F.col("bot_reason").isNull()
                            & F.col("type").isin("page", "screen", "track"))
                .withColumn("revenue_micros", F.when(is_order, micros.cast("long")))
                .withColumn("order_currency", F.when(
                    is_order, F.when(currency.rlike("^[A-Z]{3}$"), currency)
                    .otherwise(F.col("site_currency")))))

    # 3. Sessionisation: the latest visit start among a visitor's earlier human events.
    ordered = Window.partitionBy("site_id", "visitor_id").orderBy("t_us", "message_id")
    before = ordered.rowsBetween(Window.unboundedPreceding, -1)
    so_far = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    previous = F.last(F.when(F.col("sessionable"), F.col("t_us")), ignorenulls=True).over(before)
    starts = F.col("sessionable") & (previous.isNull()
                                     | (F.col("t_us") - previous >= SESSION_TIMEOUT_US))
    visits = (enriched.withColumn("starts", starts)
              .withColumn("visit_start", F.when(
                  F.col("sessionable"),
                  F.max(F.when(F.col("starts"), F.col("t_us"))).over(so_far)))
              .persist(StorageLevel.MEMORY_AND_DISK))

    in_day = (F.col("t_us") >= F.col("starts_us")) & (F.col("t_us") < F.col("ends_us"))
    events = visits.where(in_day).select(
        "message_id", "site_id", "type", "name", "visitor_id", "user_id", "anonymous_id",
        "timestamp", "received_at",
        F.when(F.col("visit_start").isNotNull(), F.concat_ws(
            ":", "site_id", "visitor_id", "visit_start")).alias("session_id"),
        "is_pageview", "page_url", "page_referrer", "page_title", "user_agent", "bot_reason",
        "revenue_micros", "order_currency", "site_currency", "locale", "context", "properties")
    events.write.mode("overwrite").parquet(f"{args.out}/events")

    sessions = (visits.where(F.col("visit_start").isNotNull())
                .groupBy("site_id", "visitor_id", "visit_start", "starts_us", "ends_us")
                .agg(F.max("t_us").alias("end_us"), F.count("*").alias("events"),
                     F.sum(F.col("is_pageview").cast("long")).alias("pageviews"))
                .where((F.col("visit_start") >= F.col("starts_us"))
                       & (F.col("visit_start") < F.col("ends_us")))
                .select("site_id", "visitor_id",
                        F.timestamp_micros("visit_start").alias("started_at"),
                        F.timestamp_micros("end_us").alias("ended_at"),
                        (F.col("end_us") - F.col("visit_start")).alias("duration_us"),
                        "events", "pageviews", (F.col("pageviews") == 1).alias("is_bounce")))
    sessions.write.mode("overwrite").parquet(f"{args.out}/sessions")
    visits.unpersist()

    # 4. The daily figures, from the two tables as written.
    events = spark.read.parquet(f"{args.out}/events")
    sessions = spark.read.parquet(f"{args.out}/sessions")
    human = F.col("bot_reason").isNull()
    counted_order = human & (F.col("order_currency") == F.col("site_currency"))
    by_events = events.groupBy("site_id").agg(
        F.sum(human.cast("long")).alias("events"),
        F.sum((human & F.col("is_pageview")).cast("long")).alias("pageviews"),
        F.countDistinct(F.when(human, F.col("visitor_id"))).alias("visitors"),
        F.sum(counted_order.cast("long")).alias("orders"),
        F.sum(F.when(counted_order, F.col("revenue_micros")).otherwise(0)).alias("revenue_micros"),
        F.sum((~human).cast("long")).alias("bot_events"))
    by_sessions = sessions.groupBy("site_id").agg(
        F.count("*").alias("visits"),
        F.sum(F.col("is_bounce").cast("long")).alias("bounces"),
        F.sum("duration_us").alias("duration_us"))
    figures = ["events", "pageviews", "visitors", "visits", "bounces", "duration_us", "orders",
               "revenue_micros", "bot_events"]
    daily = (sites.join(by_events, "site_id", "left").join(by_sessions, "site_id", "left")
             .select("site_id", *[F.coalesce(F.col(c), F.lit(0)).cast("long").alias(c)
                                  for c in figures]))
    daily.coalesce(1).write.mode("overwrite").parquet(f"{args.out}/daily_metrics")


if __name__ == "__main__":
    main()
