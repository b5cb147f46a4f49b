//! The matcher on catalogs written by hand (no database): realistic legacy/redesign pairs, the
//! true column pairs, and the match quality each reaches.

use std::collections::BTreeSet;

use crate::config::{DbKind, TableName};
use crate::endpoint::catalog::{
    check_codes, Catalog, CatalogColumn, CatalogTable, Codes, ForeignKey,
};
use crate::endpoint::desc::{ColumnDesc, Kind};

use super::{draft, render::render, Draft};

/// A catalog from a compact description: `schema.table: column type [pk] [identity]
/// [notnull] [default] [fk=table.column] [codes=A|B]; …`, one table a line. Types are
/// PostgreSQL's (`format_type` spelling).
pub fn catalog(spec: &str, case_insensitive: bool) -> Catalog {
    let mut tables = Vec::new();
    for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, cols) = line.split_once(':').expect("table: columns");
        let (schema, name) = name.trim().split_once('.').expect("schema.table");
        let mut t = CatalogTable {
            name: TableName {
                schema: Some(schema.into()),
                name: name.into(),
            },
            columns: Vec::new(),
            primary_key: Vec::new(),
            unique: Vec::new(),
            foreign_keys: Vec::new(),
        };
        for col in cols.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            let mut parts = col.split_whitespace();
            let cname = parts.next().expect("name").to_string();
            let ty = parts.next().expect("type").replace('_', " ");
            let mut c = CatalogColumn::default();
            for p in parts {
                match p {
                    "pk" => t.primary_key.push(cname.clone()),
                    "identity" => c.identity = true,
                    "notnull" => c.desc.not_null = true,
                    "default" => c.default = Some("x".into()),
                    "unique" => t.unique.push(vec![cname.clone()]),
                    p if p.starts_with("fk=") => {
                        let (pt, pc) = p[3..].rsplit_once('.').expect("fk=schema.table.col");
                        let (ps, pt) = pt.split_once('.').expect("schema.table");
                        t.foreign_keys.push(ForeignKey {
                            name: format!("fk_{cname}"),
                            columns: vec![cname.clone()],
                            parent: TableName {
                                schema: Some(ps.into()),
                                name: pt.into(),
                            },
                            parent_columns: vec![pc.into()],
                        });
                    }
                    p if p.starts_with("codes=") => {
                        c.codes = Some(Codes {
                            from: format!("CHECK ck_{cname}"),
                            values: p[6..].split('|').map(String::from).collect(),
                        })
                    }
                    other => panic!("unknown flag {other}"),
                }
            }
            c.desc = ColumnDesc {
                name: cname.clone(),
                kind: Kind::from_postgres(&ty),
                type_name: ty,
                defaulted: c.identity || c.default.is_some(),
                not_null: c.desc.not_null || t.primary_key.contains(&cname),
                ..ColumnDesc::default()
            };
            t.columns.push(c);
        }
        tables.push(t);
    }
    Catalog {
        tables,
        case_insensitive,
    }
}

/// The pairs a draft proposes, as `table.column` (active or commented out).
pub fn pairs(d: &Draft) -> BTreeSet<(String, String)> {
    d.entities
        .iter()
        .flat_map(|e| {
            e.columns.iter().map(move |c| {
                (
                    format!("{}.{}", e.a.table.name, c.a).to_lowercase(),
                    format!("{}.{}", e.b.table.name, c.b).to_lowercase(),
                )
            })
        })
        .collect()
}

/// (found, wrong, missed) against `truth`, printed.
pub fn quality(label: &str, d: &Draft, truth: &[(&str, &str)]) -> (usize, usize, usize) {
    let truth: BTreeSet<(String, String)> = truth
        .iter()
        .map(|(a, b)| (a.to_lowercase(), b.to_lowercase()))
        .collect();
    let got = pairs(d);
    let found = got.intersection(&truth).count();
    let wrong: Vec<_> = got.difference(&truth).collect();
    let missed: Vec<_> = truth.difference(&got).collect();
    println!(
        "match quality ({label}): {found} of {} true column pairs found (recall {:.0}%), {} wrong proposed (precision {:.0}%)\n  wrong: {wrong:?}\n  missed: {missed:?}",
        truth.len(),
        100.0 * found as f64 / truth.len().max(1) as f64,
        wrong.len(),
        100.0 * found as f64 / got.len().max(1) as f64
    );
    (found, wrong.len(), missed.len())
}

const LEGACY_LOWER: &str = "
dbo.tbl_customer: custid integer pk identity; custname character_varying(60) notnull; isactive character(1) notnull codes=Y|N
dbo.tbl_product: prodcode character_varying(20) pk; proddesc character_varying(100)
dbo.tbl_orderline: orderno integer pk; lineno integer pk; prodcode character_varying(20) notnull
dbo.tbl_employee: empid integer pk identity; empname character_varying(80) notnull; hiredate date
";

const REDESIGN_SMALL: &str = "
public.customers: id bigint pk identity; name character_varying(60) notnull; active boolean notnull default
public.products: id bigint pk identity; code character_varying(20) notnull unique; description text
public.order_lines: id bigint pk identity; order_id bigint notnull; line_no integer notnull; product_id bigint notnull fk=public.products.id
public.staff: id bigint pk identity; full_name character_varying(80) notnull; hired_on date
";

#[test]
fn run_together_lower_case_names_are_cut_into_words() {
    let d = draft(
        &catalog(LEGACY_LOWER, true),
        &catalog(REDESIGN_SMALL, false),
        DbKind::Mssql,
        DbKind::Postgres,
    );
    println!("{}", render(&d));
    let (_, wrong, missed) = quality(
        "lower case",
        &d,
        &[
            ("tbl_customer.custname", "customers.name"),
            ("tbl_customer.isactive", "customers.active"),
            ("tbl_product.prodcode", "products.code"),
            ("tbl_product.proddesc", "products.description"),
            ("tbl_orderline.prodcode", "order_lines.product_id"),
            ("tbl_orderline.lineno", "order_lines.line_no"),
            ("tbl_orderline.orderno", "order_lines.order_id"),
            ("tbl_employee.empname", "staff.full_name"),
            ("tbl_employee.hiredate", "staff.hired_on"),
        ],
    );
    assert_eq!((wrong, missed), (0, 0));
}

#[test]
fn catalog_fixtures_read_check_lists_like_the_databases() {
    assert_eq!(
        check_codes("([Status]='O' OR [Status]='C')").map(|(c, _)| c),
        Some("Status".to_string())
    );
}

/// A second pair: upper-case legacy names with `_CD`, `_NO`, `_DT`, `_FLG` suffixes against a
/// redesign with other words for several columns. Written before the matcher ever ran on it;
/// the first run found 12 of 22 pairs (0 wrong): the abbreviations it lacked (`CD`, `NM`,
/// `LVL`, `FLG`, `SUPP`, `PO`, `UOM`, `HDR`) were added after, so it is no longer held out
/// (the third pair below is).
const PURCHASING_LEGACY: &str = "
dbo.SUPPLIER: SUPPLIER_CD character_varying(10) pk; SUPP_NAME character_varying(80) notnull; CONTACT_NM character_varying(60); PHONE_NO character_varying(20); EMAIL_ADDR character_varying(100); COUNTRY_CD character(2)
dbo.INV_ITEM: ITEM_NO integer pk identity; ITEM_DESC character_varying(120) notnull; UOM character_varying(5); QTY_ON_HAND integer notnull; REORDER_LVL integer; SUPPLIER_CD character_varying(10) fk=dbo.SUPPLIER.SUPPLIER_CD; ACTIVE_FLG character(1) notnull codes=Y|N; LAST_UPD_DT timestamp
dbo.PO_HEADER: PO_NO integer pk identity; SUPPLIER_CD character_varying(10) notnull fk=dbo.SUPPLIER.SUPPLIER_CD; ORDER_DT date notnull; STATUS_CD character(1) notnull codes=N|A|R|C; TOTAL_AMT numeric(14,2); NEW_ID bigint
dbo.PO_DETAIL: PO_NO integer pk fk=dbo.PO_HEADER.PO_NO; LINE_NO integer pk; ITEM_NO integer notnull fk=dbo.INV_ITEM.ITEM_NO; QTY_ORDERED integer notnull; UNIT_COST numeric(12,4) notnull
dbo.SYS_PARAM: PARAM_KEY character_varying(30) pk; PARAM_VAL character_varying(200)
";

const PURCHASING_REDESIGN: &str = "
purchasing.suppliers: id bigint pk identity; code character_varying(10) notnull unique; name character_varying(80) notnull; contact_name character_varying(60); phone character_varying(20); email character_varying(100); country_code character(2)
purchasing.items: id bigint pk identity; legacy_item_no integer; description character_varying(120) notnull; unit_of_measure character_varying(5); quantity_on_hand integer notnull; reorder_level integer; supplier_id bigint fk=purchasing.suppliers.id; is_active boolean notnull default; updated_at timestamp
purchasing.purchase_orders: id bigint pk identity; legacy_po_no integer; supplier_id bigint notnull fk=purchasing.suppliers.id; ordered_on date notnull; status order_status notnull codes=new|approved|rejected|closed; total numeric(14,2)
purchasing.purchase_order_lines: id bigint pk identity; purchase_order_id bigint notnull fk=purchasing.purchase_orders.id; line_number integer notnull; item_id bigint notnull fk=purchasing.items.id; quantity integer notnull; unit_cost numeric(12,4) notnull
purchasing.audit_events: id bigint pk identity; happened_at timestamptz notnull; payload jsonb
";

const PURCHASING_TRUTH: &[(&str, &str)] = &[
    ("SUPPLIER.SUPPLIER_CD", "suppliers.code"),
    ("SUPPLIER.SUPP_NAME", "suppliers.name"),
    ("SUPPLIER.CONTACT_NM", "suppliers.contact_name"),
    ("SUPPLIER.PHONE_NO", "suppliers.phone"),
    ("SUPPLIER.EMAIL_ADDR", "suppliers.email"),
    ("SUPPLIER.COUNTRY_CD", "suppliers.country_code"),
    ("INV_ITEM.ITEM_DESC", "items.description"),
    ("INV_ITEM.UOM", "items.unit_of_measure"),
    ("INV_ITEM.QTY_ON_HAND", "items.quantity_on_hand"),
    ("INV_ITEM.REORDER_LVL", "items.reorder_level"),
    ("INV_ITEM.SUPPLIER_CD", "items.supplier_id"),
    ("INV_ITEM.ACTIVE_FLG", "items.is_active"),
    ("INV_ITEM.LAST_UPD_DT", "items.updated_at"),
    ("PO_HEADER.SUPPLIER_CD", "purchase_orders.supplier_id"),
    ("PO_HEADER.ORDER_DT", "purchase_orders.ordered_on"),
    ("PO_HEADER.STATUS_CD", "purchase_orders.status"),
    ("PO_HEADER.TOTAL_AMT", "purchase_orders.total"),
    ("PO_DETAIL.PO_NO", "purchase_order_lines.purchase_order_id"),
    ("PO_DETAIL.LINE_NO", "purchase_order_lines.line_number"),
    ("PO_DETAIL.ITEM_NO", "purchase_order_lines.item_id"),
    ("PO_DETAIL.QTY_ORDERED", "purchase_order_lines.quantity"),
    ("PO_DETAIL.UNIT_COST", "purchase_order_lines.unit_cost"),
];

#[test]
fn a_second_pair_not_tuned_to_reports_its_match_quality() {
    let d = draft(
        &catalog(PURCHASING_LEGACY, false),
        &catalog(PURCHASING_REDESIGN, false),
        DbKind::Mssql,
        DbKind::Postgres,
    );
    let text = render(&d);
    println!("{text}");
    let (found, wrong, _) = quality(
        "purchasing (tuned after its first run)",
        &d,
        PURCHASING_TRUTH,
    );
    // The draft loads whatever it found.
    crate::config::parse(&text, std::path::Path::new("t.toml"), &|_| Some("x".into()))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(found >= 20, "found {found}");
    assert!(wrong <= 1, "wrong {wrong}");
}

/// A third pair, held out: written after the matcher was done and never tuned to. Its
/// thresholds below are what the matcher reached on its first run, kept as a floor.
const SCHOOL_LEGACY: &str = "
dbo.STUDENT: STU_ID integer pk identity; FIRST_NM character_varying(40) notnull; LAST_NM character_varying(40) notnull; BIRTH_DT date; GENDER_CD character(1) codes=M|F|X; ENROLL_DT date; EMAIL character_varying(100)
dbo.COURSE: COURSE_CD character_varying(12) pk; COURSE_TITLE character_varying(100) notnull; CREDITS smallint; DEPT_CD character_varying(6)
dbo.ENROLLMENT: STU_ID integer pk fk=dbo.STUDENT.STU_ID; COURSE_CD character_varying(12) pk fk=dbo.COURSE.COURSE_CD; TERM_CD character(6) pk; GRADE character(2); WITHDRAWN_YN character(1) codes=Y|N
";

const SCHOOL_REDESIGN: &str = "
school.students: id bigint pk identity; legacy_student_id integer; given_name character_varying(40) notnull; family_name character_varying(40) notnull; date_of_birth date; gender text codes=male|female|other; enrolled_on date; email character_varying(100)
school.courses: id bigint pk identity; code character_varying(12) notnull unique; title character_varying(100) notnull; credit_points smallint; department_code character_varying(6)
school.enrollments: id bigint pk identity; student_id bigint notnull fk=school.students.id; course_id bigint notnull fk=school.courses.id; term character_varying(6) notnull; grade character_varying(2); withdrawn boolean notnull default
";

const SCHOOL_TRUTH: &[(&str, &str)] = &[
    ("STUDENT.FIRST_NM", "students.given_name"),
    ("STUDENT.LAST_NM", "students.family_name"),
    ("STUDENT.BIRTH_DT", "students.date_of_birth"),
    ("STUDENT.GENDER_CD", "students.gender"),
    ("STUDENT.ENROLL_DT", "students.enrolled_on"),
    ("STUDENT.EMAIL", "students.email"),
    ("COURSE.COURSE_CD", "courses.code"),
    ("COURSE.COURSE_TITLE", "courses.title"),
    ("COURSE.CREDITS", "courses.credit_points"),
    ("COURSE.DEPT_CD", "courses.department_code"),
    ("ENROLLMENT.STU_ID", "enrollments.student_id"),
    ("ENROLLMENT.COURSE_CD", "enrollments.course_id"),
    ("ENROLLMENT.TERM_CD", "enrollments.term"),
    ("ENROLLMENT.GRADE", "enrollments.grade"),
    ("ENROLLMENT.WITHDRAWN_YN", "enrollments.withdrawn"),
];

#[test]
fn a_held_out_pair_reports_its_match_quality() {
    let d = draft(
        &catalog(SCHOOL_LEGACY, false),
        &catalog(SCHOOL_REDESIGN, false),
        DbKind::Mssql,
        DbKind::Postgres,
    );
    let text = render(&d);
    println!("{text}");
    let (found, wrong, _) = quality("school (held out)", &d, SCHOOL_TRUTH);
    crate::config::parse(&text, std::path::Path::new("t.toml"), &|_| Some("x".into()))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    // Its first run: 13 of 15 found (given/family names are not told apart from first/last
    // by spelling), none wrong.
    assert!(found >= 13, "found {found}");
    assert_eq!(wrong, 0);
    assert!(text.contains("name = \"enrollment\""), "{text}");
}

fn one(a: &str, b: &str) -> (Draft, String) {
    let d = draft(
        &catalog(a, false),
        &catalog(b, false),
        DbKind::Postgres,
        DbKind::Postgres,
    );
    let text = render(&d);
    crate::config::parse(&text, std::path::Path::new("t.toml"), &|_| Some("x".into()))
        .unwrap_or_else(|e| panic!("the draft does not load: {e}\n{text}"));
    (d, text)
}

#[test]
fn code_lists_become_values_paired_by_spelling() {
    let (_, text) = one(
        "dbo.ORDERS: ID integer pk identity; STATUS character(1) notnull codes=O|C|H",
        "public.orders: id bigint pk identity; status order_status notnull codes=open|closed|on_hold",
    );
    assert!(
        text.contains(r#"{ a = "STATUS", b = "status", values = { O = "open", C = "closed", H = "on_hold" } },"#),
        "{text}"
    );
    assert!(text.contains("# TODO: codes paired by spelling"), "{text}");
}

#[test]
fn a_key_no_side_can_create_narrows_the_direction_with_a_todo() {
    let d = draft(
        &catalog("dbo.COUNTRY: CODE character(2) pk; NAME character_varying(40) notnull", false),
        &catalog("public.regions: id bigint pk identity; iso character(2) notnull; label character_varying(40) notnull", false),
        DbKind::Postgres,
        DbKind::Postgres,
    );
    let text = render(&d);
    // Names differ entirely: the tables match by nothing, and are listed.
    assert!(d.entities.is_empty(), "{text}");
    assert!(
        text.contains("#   A dbo.COUNTRY") && text.contains("#   B public.regions"),
        "{text}"
    );

    let (d, text) = one(
        "dbo.tbl_Country: CountryName character_varying(40) notnull; Code character(3) pk",
        "public.countries: id bigint pk identity; country_name character_varying(40) notnull",
    );
    assert_eq!(d.entities.len(), 1, "{text}");
    assert_eq!(
        d.entities[0].direction,
        Some(crate::config::Direction::AToB),
        "{text}"
    );
    assert!(text.contains("direction = \"a_to_b\""), "{text}");
    assert!(
        text.contains("# TODO: direction a_to_b: A's key (Code) has no default or identity"),
        "{text}"
    );
}

#[test]
fn a_pair_check_refuses_is_written_commented_out_with_why() {
    let (d, text) = one(
        "dbo.events: id integer pk identity; happened timestamp_without_time_zone; kind integer",
        "public.events: id bigint pk identity; happened timestamp_with_time_zone; kind text",
    );
    let e = &d.entities[0];
    assert!(e.columns.iter().all(|c| !c.active), "{text}");
    assert!(
        text.contains(r#"  # { a = "happened", b = "happened" },"#),
        "{text}"
    );
    assert!(
        text.contains("a time without a zone against one with a zone"),
        "{text}"
    );
    assert!(
        text.contains("number against text: tandem does not convert between them"),
        "{text}"
    );
}

#[test]
fn a_reference_cycle_between_entities_is_broken_with_a_todo() {
    let (d, text) = one(
        "dbo.dept: id integer pk identity; head_id integer fk=dbo.emp.id\ndbo.emp: id integer pk identity; dept_id integer fk=dbo.dept.id",
        "public.dept: id integer pk identity; head_id integer fk=public.emp.id\npublic.emp: id integer pk identity; dept_id integer fk=public.emp.id",
    );
    let _ = d;
    assert!(text.contains("# TODO:"), "{text}");
    let (_, text) = one(
        "dbo.dept: id integer pk identity; head_id integer fk=dbo.emp.id\ndbo.emp: id integer pk identity; dept_id integer fk=dbo.dept.id",
        "public.dept: id integer pk identity; head_id integer fk=public.emp.id\npublic.emp: id integer pk identity; dept_id integer fk=public.dept.id",
    );
    assert!(
        text.contains("the config refuses cycles between entities"),
        "{text}"
    );
}

#[test]
fn names_that_need_quoting_survive_the_round_trip() {
    // Names with spaces, quotes and backslashes (the fixture cannot spell them: renamed after).
    let mut a = catalog("dbo.OrderLines: LineNo integer pk; Qty integer", false);
    let mut b = catalog("public.orderlines: lineno integer pk; qty integer", false);
    a.tables[0].name.name = "Order Lines".into();
    b.tables[0].name.name = "order lines".into();
    for (c, n) in [(&mut a, "Line \"No\" \\x"), (&mut b, "line \"no\" \\x")] {
        c.tables[0].columns[0].desc.name = n.into();
        c.tables[0].primary_key = vec![n.into()];
    }
    let d = draft(&a, &b, DbKind::Postgres, DbKind::Postgres);
    let text = render(&d);
    let config = crate::config::parse(&text, std::path::Path::new("t.toml"), &|_| Some("x".into()))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let e = &config.entities[0];
    assert_eq!(e.a.table.to_string(), "dbo.Order Lines", "{text}");
    assert_eq!(e.columns[0].a, "Line \"No\" \\x", "{text}");
    assert_eq!(e.columns[0].b, "line \"no\" \\x", "{text}");
}

#[test]
fn diff_lists_what_is_missing_live_and_what_is_not_mapped() {
    let a = catalog("dbo.T: ID integer pk; NAME text; EXTRA text", false);
    let b = catalog("public.t: id integer pk\npublic.u: id integer pk", false);
    let config = crate::config::parse(
        r#"
[a]
kind = "postgres"
url = "x"
[b]
kind = "postgres"
url = "x"
[[entities]]
name = "t"
a = { table = "dbo.T", key = ["ID"] }
b = { table = "public.t", key = ["id"] }
columns = [ { a = "ID", b = "id" }, { a = "NAME", b = "name" } ]
"#,
        std::path::Path::new("t.toml"),
        &|_| None,
    )
    .expect("config");
    let found: Vec<String> = super::diff::diff(&config, &a, &b)
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        found,
        [
            r#"side B: missing: entity t: column "name" does not exist in table public.t"#,
            r#"side A: not mapped: column "EXTRA" of table dbo.T (text) is not mapped"#,
            "side B: not mapped: table public.u (1 columns) is in no entity",
        ]
    );
}
