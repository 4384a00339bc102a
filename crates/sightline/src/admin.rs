//! `sightline admin …`: what operators do by command rather than by hand-written SQL.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;
use sightline_db::{DbError, NewSite, PgStore, ReadScope, ReadTokens, Sites, Tenants, WriteKeys};

use crate::config::Document;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create the database if needed and apply pending migrations.
    Migrate,
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Sites of a tenant.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Public write keys that sites send events with.
    #[command(subcommand)]
    WriteKey(WriteKeyCommand),
    /// Secret read tokens for the query API.
    #[command(subcommand)]
    ReadToken(ReadTokenCommand),
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Short unique name: lowercase letters, digits, dashes.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// List tenants.
    List,
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Create a site.
    Create {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// Domain or app name.
        #[arg(long)]
        domain: String,
        /// IANA time zone for day, week and month figures.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// ISO 4217 currency for revenue.
        #[arg(long, default_value = "USD")]
        currency: String,
    },
    /// List a tenant's sites.
    List {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
enum WriteKeyCommand {
    /// Issue a write key for a site.
    Issue {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        /// Site id.
        #[arg(long)]
        site: i64,
        /// Events a second this key may send (default: ingest's configured rate).
        #[arg(long)]
        rate_limit: Option<i32>,
    },
    /// Revoke a write key; ingest refuses it within a second.
    Revoke {
        /// The key.
        key: String,
    },
    /// List a tenant's write keys.
    List {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
enum ReadTokenCommand {
    /// Issue a read token; it is printed once and stored only hashed.
    Issue {
        /// Tenant slug (omit with --admin).
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        tenant: Option<String>,
        /// Restrict to these site ids (repeatable); default every site of the tenant.
        #[arg(long = "site")]
        sites: Vec<i64>,
        /// An admin token for internal teams: every tenant.
        #[arg(long)]
        admin: bool,
        /// Free text to recognise the token by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a read token by id.
    Revoke {
        /// Token id.
        id: i64,
    },
    /// List read tokens of a tenant, or admin tokens.
    List {
        /// Tenant slug; omit for admin tokens.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Runs an administration command and reports its outcome as an exit code.
pub async fn run(args: AdminArgs, document: &Document) -> ExitCode {
    match execute(&args, document).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            match error {
                DbError::Invalid(_) | DbError::Conflict(_) | DbError::NotFound(_) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn execute(args: &AdminArgs, document: &Document) -> Result<(), DbError> {
    if let AdminCommand::Migrate = args.command {
        PgStore::migrate(&document.database).await?;
        println!("migrations applied");
        return Ok(());
    }
    let store = PgStore::connect_lazy(&document.database)?;
    let out = Output { json: args.json };
    match &args.command {
        AdminCommand::Migrate => {}
        AdminCommand::Tenant(TenantCommand::Create { slug, name }) => {
            let t = store.create_tenant(slug, name).await?;
            out.rows(&[&t], &["id", "slug", "name"], |t| {
                vec![t.id.to_string(), t.slug.clone(), t.name.clone()]
            });
        }
        AdminCommand::Tenant(TenantCommand::List) => {
            let tenants = store.list_tenants().await?;
            out.rows(
                &tenants.iter().collect::<Vec<_>>(),
                &["id", "slug", "name", "created"],
                |t| {
                    vec![
                        t.id.to_string(),
                        t.slug.clone(),
                        t.name.clone(),
                        t.created_at.to_rfc3339(),
                    ]
                },
            );
        }
        AdminCommand::Site(SiteCommand::Create {
            tenant,
            domain,
            time_zone,
            currency,
        }) => {
            let tenant = store.tenant_by_slug(tenant).await?;
            let s = store
                .create_site(NewSite {
                    tenant_id: tenant.id,
                    domain: domain.clone(),
                    time_zone: time_zone.clone(),
                    currency: currency.clone(),
                })
                .await?;
            out.rows(&[&s], SITE_HEADERS, site_row);
        }
        AdminCommand::Site(SiteCommand::List { tenant }) => {
            let tenant = store.tenant_by_slug(tenant).await?;
            let sites = store.list_sites(tenant.id).await?;
            out.rows(&sites.iter().collect::<Vec<_>>(), SITE_HEADERS, site_row);
        }
        AdminCommand::WriteKey(WriteKeyCommand::Issue {
            tenant,
            site,
            rate_limit,
        }) => {
            let tenant = store.tenant_by_slug(tenant).await?;
            let k = store.issue_write_key(tenant.id, *site, *rate_limit).await?;
            out.rows(&[&k], KEY_HEADERS, key_row);
        }
        AdminCommand::WriteKey(WriteKeyCommand::Revoke { key }) => {
            if !store.revoke_write_key(key).await? {
                return Err(DbError::NotFound(format!("live write key `{key}`")));
            }
            println!("revoked");
        }
        AdminCommand::WriteKey(WriteKeyCommand::List { tenant }) => {
            let tenant = store.tenant_by_slug(tenant).await?;
            let keys = store.list_write_keys(tenant.id).await?;
            out.rows(&keys.iter().collect::<Vec<_>>(), KEY_HEADERS, key_row);
        }
        AdminCommand::ReadToken(ReadTokenCommand::Issue {
            tenant,
            sites,
            admin,
            label,
        }) => {
            let scope = match (admin, tenant) {
                (true, _) => ReadScope::Admin,
                (false, Some(slug)) => ReadScope::Tenant {
                    tenant_id: store.tenant_by_slug(slug).await?.id,
                    site_ids: (!sites.is_empty()).then(|| sites.clone()),
                },
                (false, None) => return Err(DbError::Invalid("give --tenant or --admin".into())),
            };
            let (clear, token) = store.issue_read_token(scope, label).await?;
            #[derive(Serialize)]
            struct Issued<'a> {
                token: &'a str,
                #[serde(flatten)]
                stored: &'a sightline_db::ReadToken,
            }
            if out.json {
                print_json(&Issued {
                    token: &clear,
                    stored: &token,
                });
            } else {
                println!("token (shown once, store it now): {clear}");
                out.rows(&[&token], TOKEN_HEADERS, token_row);
            }
        }
        AdminCommand::ReadToken(ReadTokenCommand::Revoke { id }) => {
            if !store.revoke_read_token(*id).await? {
                return Err(DbError::NotFound(format!("live read token {id}")));
            }
            println!("revoked");
        }
        AdminCommand::ReadToken(ReadTokenCommand::List { tenant }) => {
            let tenant_id = match tenant {
                Some(slug) => Some(store.tenant_by_slug(slug).await?.id),
                None => None,
            };
            let tokens = store.list_read_tokens(tenant_id).await?;
            out.rows(&tokens.iter().collect::<Vec<_>>(), TOKEN_HEADERS, token_row);
        }
    }
    Ok(())
}

const SITE_HEADERS: &[&str] = &["id", "tenant", "domain", "time zone", "currency"];
fn site_row(s: &&sightline_db::Site) -> Vec<String> {
    vec![
        s.id.to_string(),
        s.tenant_id.to_string(),
        s.domain.clone(),
        s.time_zone.clone(),
        s.currency.clone(),
    ]
}

const KEY_HEADERS: &[&str] = &["key", "site", "rate limit", "revoked"];
fn key_row(k: &&sightline_db::WriteKey) -> Vec<String> {
    vec![
        k.key.clone(),
        k.site_id.to_string(),
        k.rate_limit_per_sec
            .map_or("default".into(), |r| r.to_string()),
        k.revoked_at.map_or(String::new(), |t| t.to_rfc3339()),
    ]
}

const TOKEN_HEADERS: &[&str] = &["id", "prefix", "scope", "label", "revoked"];
fn token_row(t: &&sightline_db::ReadToken) -> Vec<String> {
    let scope = match &t.scope {
        ReadScope::Admin => "admin".to_string(),
        ReadScope::Tenant {
            tenant_id,
            site_ids: None,
        } => format!("tenant {tenant_id}"),
        ReadScope::Tenant {
            tenant_id,
            site_ids: Some(ids),
        } => {
            format!("tenant {tenant_id} sites {ids:?}")
        }
    };
    vec![
        t.id.to_string(),
        format!("{}…", t.prefix),
        scope,
        t.label.clone(),
        t.revoked_at.map_or(String::new(), |r| r.to_rfc3339()),
    ]
}

struct Output {
    json: bool,
}

fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("cannot encode JSON: {error}"),
    }
}

impl Output {
    /// Prints rows as an aligned table, or the items as JSON.
    fn rows<T: Serialize>(&self, items: &[T], headers: &[&str], row: impl Fn(&T) -> Vec<String>) {
        if self.json {
            print_json(items);
            return;
        }
        let rows: Vec<Vec<String>> = items.iter().map(row).collect();
        let widths: Vec<usize> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([h.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        println!(
            "{}",
            line(headers.iter().map(|h| h.to_uppercase()).collect())
        );
        for r in rows {
            println!("{}", line(r));
        }
    }
}
