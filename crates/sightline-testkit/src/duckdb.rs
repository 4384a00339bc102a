//! DuckDB as the *independent* reader of the lake's Parquet: tests assert on what another engine
//! reads from our files, not on what our own `parquet` module reads back.
//!
//! DuckDB runs from its Python package in a virtualenv at `<cache>/duckdb-venv` (see
//! [`crate::cache_dir`]), created on first use with `python3 -m venv` and `pip install` of the
//! pins in `duckdb-requirements.txt`. A file lock serialises the install across the test
//! processes nextest runs in parallel; a stamp (the interpreter's version and the pins) makes it
//! happen once per machine, and again only when the pins change.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};
use sightline_lake::ObjectStore;

/// The pins installed into the virtualenv.
const REQUIREMENTS: &str = include_str!("../duckdb-requirements.txt");

/// Runs one query and prints its rows as a JSON array of objects. Values JSON cannot hold are
/// converted: BLOBs to lowercase hex, dates and timestamps to ISO 8601 (timestamps with time
/// zone in UTC), decimals to strings, UUIDs to strings.
const RUNNER: &str = r#"
import datetime, decimal, json, sys, uuid
import duckdb

def convert(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc)
        return v.isoformat()
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    if isinstance(v, (decimal.Decimal, uuid.UUID)):
        return str(v)
    if isinstance(v, dict):
        return {str(k): convert(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [convert(x) for x in v]
    return v

con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
cur = con.execute(sys.stdin.read())
names = [d[0] for d in cur.description]
rows = [dict(zip(names, (convert(v) for v in row))) for row in cur.fetchall()]
json.dump(rows, sys.stdout)
"#;

/// One result row, by column name.
pub type Row = Map<String, Value>;

/// The virtualenv's Python with DuckDB installed, installing it on first use.
pub fn python() -> anyhow::Result<PathBuf> {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = PYTHON.get() {
        return Ok(p.clone());
    }
    let python = ensure_venv(&crate::cache_dir())?;
    Ok(PYTHON.get_or_init(|| python).clone())
}

fn ensure_venv(cache: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let venv = cache.join("duckdb-venv");
    let python = venv.join("bin").join("python");
    let lock_path = cache.join(".duckdb-venv.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    // Blocks while another test process installs; released when `lock` is dropped.
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;

    let version = Command::new("python3")
        .arg("--version")
        .output()
        .context("running python3 (the DuckDB checks need Python 3 with venv and pip)")?;
    let stamp = format!(
        "{}\n{REQUIREMENTS}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    let stamp_path = venv.join(".sightline-stamp");
    if python.exists() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp) {
        return Ok(python);
    }

    let requirements = cache.join("duckdb-requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS)?;
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))
    .context("creating the DuckDB virtualenv (on Debian: apt-get install python3-venv)")?;
    run(Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
        ])
        .arg(&requirements))
    .context("pip install of DuckDB into its virtualenv")?;
    std::fs::write(&stamp_path, stamp)?;
    Ok(python)
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs `sql` in DuckDB with `dir` as the working folder, so relative paths such as
/// `read_parquet('raw/events/**/*.parquet', hive_partitioning = true)` resolve inside it.
/// Blocking; see [`query_in`] from async code.
pub fn query_blocking(dir: &Path, sql: &str) -> anyhow::Result<Vec<Row>> {
    use std::io::Write as _;
    let python = python()?;
    let mut child = Command::new(&python)
        .args(["-c", RUNNER])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    child
        .stdin
        .take()
        .context("stdin of DuckDB")?
        .write_all(sql.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "DuckDB failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("DuckDB's JSON output")
}

/// [`query_blocking`] on a blocking thread.
pub async fn query_in(dir: &Path, sql: &str) -> anyhow::Result<Vec<Row>> {
    let (dir, sql) = (dir.to_path_buf(), sql.to_string());
    tokio::task::spawn_blocking(move || query_blocking(&dir, &sql)).await?
}

/// Copies every object of `store` under `prefix` into `dir`, each at its key as a relative path
/// (so Hive partitions stay folders). Returns the keys copied.
pub async fn download(
    store: &dyn ObjectStore,
    prefix: &str,
    dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let keys = store.list(prefix).await?;
    for key in &keys {
        let body = store.get(key).await?;
        let path = key.split('/').fold(dir.to_path_buf(), |p, s| p.join(s));
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&path, &body).await?;
    }
    Ok(keys)
}

/// Downloads the objects of `store` under `prefix` into a temporary folder and runs `sql` there
/// (see [`query_blocking`] for paths). DuckDB reads the files as any engine would.
pub async fn query_store(
    store: &dyn ObjectStore,
    prefix: &str,
    sql: &str,
) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    download(store, prefix, dir.path()).await?;
    query_in(dir.path(), sql).await
}
