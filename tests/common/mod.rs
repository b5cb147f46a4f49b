// TEMPORARY until the harness lands.
#![allow(dead_code)]
pub mod fixtures;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tandem::cluster::Cluster;
pub struct Pair {
    pub a: Cluster,
    pub b: Cluster,
}
pub fn shared() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| {
        tandem::cluster::stop_all_at_exit();
        Pair {
            a: Cluster::start("a").unwrap(),
            b: Cluster::start("b").unwrap(),
        }
    })
}
pub fn fresh_dbs(name: &str) -> (String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let db = format!("{name}_{}", N.fetch_add(1, Ordering::SeqCst));
    let p = shared();
    p.a.create_database(&db).unwrap();
    p.b.create_database(&db).unwrap();
    (p.a.url(&db), p.b.url(&db))
}
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}
pub fn own_pair(label: &str) -> Pair {
    tandem::cluster::stop_all_at_exit();
    Pair {
        a: Cluster::start(&format!("{label}-a")).unwrap(),
        b: Cluster::start(&format!("{label}-b")).unwrap(),
    }
}
