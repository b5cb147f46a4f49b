//! The scripted scene: a few changes on either side, each followed by watching it arrive on
//! the other side.
//!
//! The SQL printed is exactly the SQL run (ids are integers read back from the databases),
//! so a user can copy any step into psql (or sqlcmd, for A on SQL Server). It is written
//! once, in the shared spelling of [`show`] (`dbo.[ORDERS]`); only how an insert returns its
//! generated key differs: `RETURNING` on PostgreSQL, `SCOPE_IDENTITY()` on SQL Server.

use std::time::{Duration, Instant};

use super::show::{self, Db, Dialect, Row, Table, A_ITEMS, A_ORDERS, B_ITEMS, B_ORDERS};
use crate::cli::CliError;

/// How long a change may take to arrive before the demo gives up on it.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the other side is polled while waiting for a change.
const POLL: Duration = Duration::from_millis(10);

/// The two demo databases and the pause between steps.
pub struct Scene<'a> {
    pub a: &'a Db,
    pub b: &'a Db,
    pub pause: Duration,
}

const STEPS: usize = 7;

impl Scene<'_> {
    fn client(&self, side: &str) -> &Db {
        if side == "A" {
            self.a
        } else {
            self.b
        }
    }

    /// Plays every step; ends with both sides holding the same, linked records.
    pub async fn play(&self) -> Result<(), CliError> {
        // 1. An order born in A, in A's legacy codes.
        self.step(1, "insert an order in A, with A's legacy code STATUS 'O'");
        let a_ada = self
            .insert(
                "A",
                "INSERT INTO dbo.[ORDERS] ([CUST_NAME], [STATUS], [AMOUNT]) VALUES ('Ada Lovelace', 'O', 120.50)",
                "ORDER_NO",
            )
            .await?;
        println!("     → ORDER_NO {a_ada}");
        let t0 = Instant::now();
        let row = self
            .arrive(&B_ORDERS, &format!("WHERE legacy_no = {a_ada}"), t0, |r| {
                !r.is_empty()
            })
            .await?
            .remove(0);
        let b_ada = id_of(&row, &B_ORDERS)?;
        println!("       STATUS 'O' became status 'open'; B generated id {b_ada}; legacy_no holds A's ORDER_NO");
        self.linked(
            &A_ORDERS,
            &format!("WHERE [ORDER_NO] = {a_ada} AND [NEW_ID] IS NOT NULL"),
            t0,
        )
        .await?;
        println!("       A's NEW_ID now shows B's id {b_ada}");
        self.pause().await;

        // 2. Children born in A: their parent key is translated through the id links.
        self.step(2, "add two items to that order in A");
        self.exec(
            "A",
            &format!(
                "INSERT INTO dbo.[ORDER_ITEMS] ([ORDER_NO], [LINE_NO], [QTY]) VALUES ({a_ada}, 1, 2), ({a_ada}, 2, 5)"
            ),
        )
        .await?;
        let t0 = Instant::now();
        self.arrive(&B_ITEMS, &format!("WHERE order_id = {b_ada}"), t0, |r| {
            r.len() >= 2
        })
        .await?;
        println!(
            "       order_id is B's id {b_ada}, not A's ORDER_NO {a_ada}: tandem translated it"
        );
        self.pause().await;

        // 3. An order born in B.
        self.step(3, "insert an order in B");
        let b_grace = self
            .insert(
                "B",
                "INSERT INTO public.orders (customer, status, amount) VALUES ('Grace Hopper', 'open', 75.00)",
                "id",
            )
            .await?;
        println!("     → id {b_grace}");
        let t0 = Instant::now();
        let row = self
            .arrive(&A_ORDERS, &format!("WHERE [NEW_ID] = {b_grace}"), t0, |r| {
                !r.is_empty()
            })
            .await?
            .remove(0);
        let a_grace = id_of(&row, &A_ORDERS)?;
        println!("       status 'open' became STATUS 'O'; A generated ORDER_NO {a_grace}");
        self.linked(
            &B_ORDERS,
            &format!("WHERE id = {b_grace} AND legacy_no IS NOT NULL"),
            t0,
        )
        .await?;
        println!("       B's legacy_no now shows A's ORDER_NO {a_grace}");
        self.pause().await;

        // 4. A child born in B.
        self.step(4, "add an item to that order in B");
        self.insert(
            "B",
            &format!(
                "INSERT INTO public.order_items (order_id, line_no, quantity) VALUES ({b_grace}, 1, 3)"
            ),
            "id",
        )
        .await?;
        let t0 = Instant::now();
        self.arrive(
            &A_ITEMS,
            &format!("WHERE [ORDER_NO] = {a_grace}"),
            t0,
            |r| !r.is_empty(),
        )
        .await?;
        self.pause().await;

        // 5. An update in B of a record born in A.
        self.step(5, "close the first order in B");
        self.exec(
            "B",
            &format!("UPDATE public.orders SET status = 'closed' WHERE id = {b_ada}"),
        )
        .await?;
        let t0 = Instant::now();
        self.arrive(
            &A_ORDERS,
            &format!("WHERE [ORDER_NO] = {a_ada} AND [STATUS] = 'C'"),
            t0,
            |r| !r.is_empty(),
        )
        .await?;
        println!("       status 'closed' became STATUS 'C'");
        self.pause().await;

        // 6. A delete in A.
        self.step(6, "delete an item in A");
        self.exec(
            "A",
            &format!("DELETE FROM dbo.[ORDER_ITEMS] WHERE [ORDER_NO] = {a_ada} AND [LINE_NO] = 2"),
        )
        .await?;
        let t0 = Instant::now();
        let ms = self
            .gone(
                &B_ITEMS,
                &format!("WHERE order_id = {b_ada} AND line_no = 2"),
                t0,
            )
            .await?;
        println!("  ✓ gone from B {} after {ms} ms", B_ITEMS.label);
        self.pause().await;

        // 7. A delete in B whose cascade A repeats with its own foreign key.
        self.step(
            7,
            "delete the second order in B (its item goes with it: ON DELETE CASCADE)",
        );
        self.exec(
            "B",
            &format!("DELETE FROM public.orders WHERE id = {b_grace}"),
        )
        .await?;
        let t0 = Instant::now();
        self.gone(&A_ORDERS, &format!("WHERE [ORDER_NO] = {a_grace}"), t0)
            .await?;
        let ms = self
            .gone(&A_ITEMS, &format!("WHERE [ORDER_NO] = {a_grace}"), t0)
            .await?;
        println!(
            "  ✓ gone from A {} and its item from {} after {ms} ms",
            A_ORDERS.label, A_ITEMS.label
        );
        Ok(())
    }

    fn step(&self, n: usize, what: &str) {
        println!();
        println!("[{n}/{STEPS}] {what}");
    }

    async fn pause(&self) {
        tokio::time::sleep(self.pause).await;
    }

    /// Prints and runs one statement (in the shared spelling) on a side.
    async fn exec(&self, side: &str, sql: &str) -> Result<(), CliError> {
        let db = self.client(side);
        self.run(side, &db.spell(sql)).await.map(|_| ())
    }

    /// Prints and runs an `INSERT` (in the shared spelling) of one row or more on a side;
    /// returns the `column` its side generated for the last one.
    async fn insert(&self, side: &str, insert: &str, column: &str) -> Result<i64, CliError> {
        let db = self.client(side);
        let sql = match db.dialect() {
            Dialect::Pg => format!("{} RETURNING {}", db.spell(insert), returned(column)),
            Dialect::Ms => format!("{insert}; SELECT SCOPE_IDENTITY() AS [{column}]"),
        };
        self.run(side, &sql)
            .await?
            .ok_or_else(|| CliError::Setup(format!("the insert on {side} returned no {column}")))
    }

    /// Prints `sql` (in the side's dialect) and runs it.
    async fn run(&self, side: &str, sql: &str) -> Result<Option<i64>, CliError> {
        println!("  {side}> {sql};");
        self.client(side)
            .exec(sql)
            .await
            .map_err(|e| CliError::Setup(format!("demo step on {side} failed: {e}")))
    }

    /// Polls `table` until the rows matching `filter` satisfy `done`, prints them with the
    /// time since `t0` (the commit of the change), and returns them.
    async fn arrive(
        &self,
        table: &Table,
        filter: &str,
        t0: Instant,
        done: impl Fn(&[Row]) -> bool,
    ) -> Result<Vec<Row>, CliError> {
        self.show_when(table, filter, t0, done, "arrived in").await
    }

    /// [`Self::arrive`] for the id written back at the source of a change.
    async fn linked(&self, table: &Table, filter: &str, t0: Instant) -> Result<Vec<Row>, CliError> {
        self.show_when(table, filter, t0, |r| !r.is_empty(), "id written back in")
            .await
    }

    async fn show_when(
        &self,
        table: &Table,
        filter: &str,
        t0: Instant,
        done: impl Fn(&[Row]) -> bool,
        what: &str,
    ) -> Result<Vec<Row>, CliError> {
        let rows = self.poll(table, filter, t0, done).await?;
        let ms = t0.elapsed().as_millis();
        let head = format!("  ✓ {what} {} {} after {ms} ms:", table.side, table.label);
        match rows.as_slice() {
            [row] => println!("{head} {}", table.line(row)),
            _ => {
                println!("{head}");
                for row in &rows {
                    println!("      {}", table.line(row));
                }
            }
        }
        Ok(rows)
    }

    /// Polls `table` until no row matches `filter`; returns the milliseconds since `t0`.
    async fn gone(&self, table: &Table, filter: &str, t0: Instant) -> Result<u128, CliError> {
        self.poll(table, filter, t0, |r| r.is_empty()).await?;
        Ok(t0.elapsed().as_millis())
    }

    async fn poll(
        &self,
        table: &Table,
        filter: &str,
        t0: Instant,
        done: impl Fn(&[Row]) -> bool,
    ) -> Result<Vec<Row>, CliError> {
        let client = self.client(table.side);
        loop {
            let rows = table.rows(client, filter).await.map_err(CliError::Setup)?;
            if done(&rows) {
                return Ok(rows);
            }
            if t0.elapsed() > ARRIVAL_TIMEOUT {
                return Err(CliError::Found(format!(
                    "the change did not reach {} {} ({filter}) within {} s; \
                     the sync log above (stderr) says why",
                    table.side,
                    table.label,
                    ARRIVAL_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A column after `RETURNING` on PostgreSQL: bare when lower case, quoted otherwise.
fn returned(column: &str) -> String {
    if column
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        column.to_string()
    } else {
        format!("\"{}\"", column.replace('"', "\"\""))
    }
}

/// The (single-column) key of a row read from `table`.
fn id_of(row: &Row, table: &Table) -> Result<i64, CliError> {
    show::int(row, 0).ok_or_else(|| {
        CliError::Setup(format!(
            "{} {}: key {} is not an integer",
            table.side, table.label, table.columns[0]
        ))
    })
}
