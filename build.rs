//! Build script: only tells the tests whether a SQL Server (or Babelfish) and a browser are
//! configured.
//!
//! With `TANDEM_TEST_MSSQL_URL` set when the tests are built, the SQL Server suites compile as
//! ordinary tests; without it they compile as `#[ignore]`d, so `cargo test` reports them as
//! ignored, never as passed. `deploy/test.sh` starts Babelfish and sets the variable when
//! `../shared/babelfish` (or `$TANDEM_BABELFISH_HOME`) is there. Likewise
//! `TANDEM_TEST_CHROMEDRIVER` (the path of `chromedriver`, from Debian's `chromium-driver`)
//! turns on the status page's browser test; `.ci/run` and `deploy/test.sh` set it.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(tandem_mssql)");
    println!("cargo::rustc-check-cfg=cfg(tandem_browser)");
    println!("cargo::rerun-if-env-changed=TANDEM_TEST_MSSQL_URL");
    println!("cargo::rerun-if-env-changed=TANDEM_TEST_CHROMEDRIVER");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("TANDEM_TEST_MSSQL_URL").is_ok_and(|u| !u.trim().is_empty()) {
        println!("cargo::rustc-cfg=tandem_mssql");
    }
    if std::env::var("TANDEM_TEST_CHROMEDRIVER").is_ok_and(|u| !u.trim().is_empty()) {
        println!("cargo::rustc-cfg=tandem_browser");
    }
}
