//! `tandem init`: a draft config from the two live schemas; `init --diff`: an existing config
//! against them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::CliError;
use crate::config::{self, Config, DbKind, Secret, Side, SideConfig, SyncConfig};
use crate::endpoint::catalog::Catalog;
use crate::endpoint::{self};
use crate::init::{self, diff::DiffKind};

/// What `tandem init` was asked.
#[derive(Debug)]
pub struct InitArgs {
    pub a: Option<Secret>,
    pub b: Option<Secret>,
    pub a_kind: Option<DbKind>,
    pub b_kind: Option<DbKind>,
    /// Where the draft goes; `-`: standard output.
    pub out: PathBuf,
    pub force: bool,
}

/// The kind of database a connection string names: a URL (`postgres://`) or libpq's
/// `host=…` is PostgreSQL, an ADO.NET string (`server=…`) SQL Server.
pub fn kind_of(url: &str) -> Option<DbKind> {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Some(DbKind::Postgres);
    }
    let keys: Vec<&str> = lower
        .split(';')
        .filter_map(|p| p.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    if keys
        .iter()
        .any(|k| ["server", "data source", "addr", "address"].contains(k))
    {
        return Some(DbKind::Mssql);
    }
    if lower.contains("host=") || lower.contains("dbname=") {
        return Some(DbKind::Postgres);
    }
    None
}

/// A side's settings for reading its catalog (no config file yet).
fn side_config(
    side: Side,
    url: Option<Secret>,
    kind: Option<DbKind>,
) -> Result<SideConfig, CliError> {
    let Some(url) = url else {
        return Err(CliError::Setup(format!(
            "init needs --{s} URL (or $TANDEM_{S}_URL): the connection string of side {S}",
            s = side.name(),
            S = side
        )));
    };
    let Some(kind) = kind.or_else(|| kind_of(url.expose())) else {
        return Err(CliError::Setup(format!(
            "cannot tell the kind of database of --{}: give --{}-kind postgres|mssql",
            side.name(),
            side.name()
        )));
    };
    Ok(SideConfig {
        kind,
        url,
        url_file: None,
        password_file: None,
        pool_size: 2,
        schema: "tandem".to_string(),
    })
}

/// Reads the catalog of `side` of `config`.
async fn catalog(config: &Arc<Config>, side: Side) -> Result<Catalog, CliError> {
    let ep = endpoint::open(config.clone(), side)?;
    ep.ping().await?;
    Ok(ep.catalog().await?)
}

/// `tandem init`: writes the draft, says what it holds.
pub async fn run(args: InitArgs) -> Result<(), CliError> {
    let a = side_config(Side::A, args.a, args.a_kind)?;
    let b = side_config(Side::B, args.b, args.b_kind)?;
    let to_stdout = args.out.as_os_str() == "-";
    if !to_stdout && args.out.exists() && !args.force {
        return Err(CliError::Setup(format!(
            "{} exists already: init does not overwrite a config (give --force, or --out another file; `tandem init --diff` compares a config with the schemas)",
            args.out.display()
        )));
    }
    let (a_kind, b_kind) = (a.kind, b.kind);
    let config = Arc::new(Config {
        path: args.out.clone(),
        a,
        b,
        sync: SyncConfig::default(),
        entities: Vec::new(),
        service: Default::default(),
    });
    let (ca, cb) = (
        catalog(&config, Side::A).await?,
        catalog(&config, Side::B).await?,
    );
    let draft = init::draft(&ca, &cb, a_kind, b_kind);
    let text = init::render::render(&draft);
    // The draft must load as it is written (placeholders filled with anything).
    let loads = config::parse(&text, &args.out, &|_| {
        Some("postgres://x@localhost/x".into())
    });
    if to_stdout {
        print!("{text}");
    } else {
        std::fs::write(&args.out, &text)
            .map_err(|e| CliError::Setup(format!("cannot write {}: {e}", args.out.display())))?;
    }
    let c = draft.counts();
    let say = |m: String| {
        if to_stdout {
            eprintln!("{m}");
        } else {
            println!("{m}");
        }
    };
    say(format!(
        "{}: {} entities, {} column pairs ({} with a TODO, {} commented out), {} TODO lines; tables not matched: {}, columns not matched: {}",
        if to_stdout { "draft".to_string() } else { format!("wrote {}", args.out.display()) },
        c.entities,
        c.pairs,
        c.uncertain,
        c.commented,
        c.todos,
        c.unmatched_tables,
        c.unmatched_columns
    ));
    say("the urls are ${TANDEM_A_URL} and ${TANDEM_B_URL}: export them; resolve each TODO, then run `tandem check`".to_string());
    match loads {
        Ok(_) => Ok(()),
        Err(e) if draft.entities.is_empty() => Err(CliError::Found(format!(
            "no table of A matched a table of B, so the draft has no entity: {e}"
        ))),
        Err(e) => Err(CliError::Setup(format!(
            "internal: the draft does not load; please report it: {e}"
        ))),
    }
}

/// `tandem init --diff`: exit 1 and list the differences when the config and the live schemas
/// differ.
pub async fn diff(path: &Path) -> Result<(), CliError> {
    let config = Arc::new(config::load(path)?);
    let (ca, cb) = (
        catalog(&config, Side::A).await?,
        catalog(&config, Side::B).await?,
    );
    let mut found = init::diff::diff(&config, &ca, &cb);
    init::diff::suggest(
        &mut found,
        &init::draft(&ca, &cb, config.a.kind, config.b.kind),
    );
    if found.is_empty() {
        println!(
            "ok: the config and the live schemas agree ({} entities; every table and column is mapped)",
            config.entities.len()
        );
        return Ok(());
    }
    for d in &found {
        println!("{d}");
    }
    let missing = found.iter().filter(|d| d.kind == DiffKind::Missing).count();
    Err(CliError::Found(format!(
        "{} difference(s): {missing} named by the config but missing live, {} live but not mapped",
        found.len(),
        found.len() - missing
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_is_read_from_the_connection_string() {
        assert_eq!(kind_of("postgres://u@h/db"), Some(DbKind::Postgres));
        assert_eq!(kind_of("postgresql://h/db"), Some(DbKind::Postgres));
        assert_eq!(kind_of("host=h dbname=x"), Some(DbKind::Postgres));
        assert_eq!(
            kind_of("server=tcp:h,1433;user=u;password=p"),
            Some(DbKind::Mssql)
        );
        assert_eq!(kind_of("Data Source=h;User ID=u"), Some(DbKind::Mssql));
        assert_eq!(kind_of("nonsense"), None);
    }
}
