//! Names as words, and how alike two names are: `tbl_Customer`, `CUSTOMERS` and `customers`
//! are one word `customer`; `CustName` is `customer name`; `OrderNo` and `order_number` are
//! equal; `IsActive` and `active` are equal. Pure and deterministic; scores are in 0..=1.

/// Abbreviations of legacy schemas and what they stand for (whole words only).
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("cust", "customer"),
    ("cst", "customer"),
    ("clnt", "client"),
    ("qty", "quantity"),
    ("amt", "amount"),
    ("no", "number"),
    ("nr", "number"),
    ("num", "number"),
    ("nbr", "number"),
    ("desc", "description"),
    ("descr", "description"),
    ("addr", "address"),
    ("dt", "date"),
    ("tel", "phone"),
    ("telephone", "phone"),
    ("cat", "category"),
    ("emp", "employee"),
    ("prod", "product"),
    ("ord", "order"),
    ("mgr", "manager"),
    ("dept", "department"),
    ("ln", "line"),
    ("pct", "percent"),
    ("val", "value"),
    ("sts", "status"),
    ("stat", "status"),
    ("cnt", "count"),
    ("inv", "invoice"),
    ("acct", "account"),
    ("bal", "balance"),
    ("ccy", "currency"),
    ("curr", "currency"),
    ("prc", "price"),
    ("ts", "timestamp"),
    ("upd", "updated"),
    ("mod", "modified"),
    ("crt", "created"),
    ("del", "deleted"),
    ("zip", "postcode"),
    ("postal", "postcode"),
    ("mail", "email"),
    ("e", "email"),
    ("fname", "firstname"),
    ("lname", "lastname"),
    ("ident", "id"),
    ("cd", "code"),
    ("nm", "name"),
    ("lvl", "level"),
    ("flg", "flag"),
    ("supp", "supplier"),
    ("itm", "item"),
    ("hdr", "header"),
    ("dtl", "detail"),
    // `hired_on`, `created_at`: the date of an event.
    ("on", "date"),
    ("at", "date"),
];

/// Words that name the same thing in different schemas (partial credit, not equality).
const SYNONYMS: &[&[&str]] = &[
    &["customer", "client"],
    &["employee", "staff", "worker", "person"],
    &["product", "article", "item"],
    &["line", "detail", "item", "position", "row"],
    &["amount", "total", "sum", "value"],
    &["quantity", "count"],
    &["active", "enabled"],
    &["deleted", "removed"],
    &["created", "inserted", "added"],
    &["modified", "updated", "changed"],
    &["manager", "boss", "supervisor", "parent"],
    &["id", "number", "code", "key"],
    &["description", "note", "remark", "comment", "text"],
    &["name", "title", "label"],
    &["date", "day"],
    &["price", "cost"],
];

/// Words that say nothing about what a column holds.
const NOISE: &[&str] = &["is", "has", "the", "of", "fld", "col", "flag"];

/// Table name words that mark a table without saying what it holds.
const TABLE_NOISE: &[&str] = &["tbl", "tb", "tab", "t", "dbo", "header", "master"];

/// Short forms that stand for several words.
const PHRASES: &[(&str, &[&str])] = &[
    ("firstname", &["first", "name"]),
    ("lastname", &["last", "name"]),
    ("uom", &["unit", "measure"]),
    ("po", &["purchase", "order"]),
    ("dob", &["birth", "date"]),
];

/// The words of an identifier: split at `_`, spaces, digits and case changes
/// (`CustID` → `cust id`, `ORDER_NO` → `order no`, `HTTPStatus` → `http status`), lower case.
pub fn split(ident: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = ident.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if let Some(&p) = cur.chars().last().as_ref() {
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary = (p.is_lowercase() && c.is_uppercase())
                || (p.is_uppercase() && c.is_uppercase() && next_lower)
                || (p.is_ascii_digit() != c.is_ascii_digit());
            if boundary {
                words.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words.into_iter().map(|w| w.to_lowercase()).collect()
}

/// A word in its canonical form: abbreviations expanded, plurals made singular.
pub fn canonical(word: &str) -> String {
    let w = singular(word);
    ABBREVIATIONS
        .iter()
        .find(|(abbr, _)| *abbr == w)
        .map_or(w, |(_, full)| full.to_string())
}

pub fn singular(w: &str) -> String {
    let keep = [
        "status", "address", "news", "series", "alias", "bus", "class", "is", "has",
    ];
    if w.len() <= 3 || keep.contains(&w) || w.ends_with("ss") || w.ends_with("us") {
        return w.to_string();
    }
    if let Some(stem) = w.strip_suffix("ies") {
        return format!("{stem}y");
    }
    for end in ["ches", "shes", "xes", "sses"] {
        if w.ends_with(end) {
            return w[..w.len() - 2].to_string();
        }
    }
    w.strip_suffix('s').unwrap_or(w).to_string()
}

/// A run-together word (`custname`, `ORDERNO`: Babelfish and old schemas lose the case) cut
/// into words that `known` says are words, preferring the fewest pieces; the word itself when
/// it cannot be cut so.
pub fn segment(word: &str, known: &dyn Fn(&str) -> bool) -> Vec<String> {
    if known(word) || word.len() < 4 || !word.chars().all(|c| c.is_ascii_alphabetic()) {
        return vec![word.to_string()];
    }
    if let Some(pieces) = cuts(word, known) {
        return pieces;
    }
    // A known word of 4 letters or more at the end, and a rest of 3 or more
    // (`hiredate` → `hire date`).
    let n = word.len();
    for cut in 3..n.saturating_sub(3) + 1 {
        let (head, tail) = word.split_at(cut);
        // Only a known tail: a known head leaves suffixes (`enroll|ment`).
        if tail.len() >= 4 && known(tail) && !is_abbreviation(tail) {
            return vec![head.to_string(), tail.to_string()];
        }
    }
    vec![word.to_string()]
}

/// `word` as two or more pieces of two letters or more that `known` knows, the fewest
/// pieces; None when there is no such cut.
pub fn cuts(word: &str, known: &dyn Fn(&str) -> bool) -> Option<Vec<String>> {
    if !word.is_ascii() {
        return None;
    }
    let n = word.len();
    // best[i]: fewest pieces for word[..i], and where the last piece starts.
    let mut best: Vec<Option<(usize, usize)>> = vec![None; n + 1];
    best[0] = Some((0, 0));
    for end in 1..=n {
        for start in 0..end {
            let Some((count, _)) = best[start] else {
                continue;
            };
            let piece = &word[start..end];
            if piece.len() >= 2
                && piece.len() < n
                && known(piece)
                && best[end].is_none_or(|(c, _)| count + 1 < c)
            {
                best[end] = Some((count + 1, start));
            }
        }
    }
    best[n]?;
    let mut pieces = Vec::new();
    let mut end = n;
    while end > 0 {
        let (_, start) = best[end]?;
        pieces.push(word[start..end].to_string());
        end = start;
    }
    pieces.reverse();
    Some(pieces)
}

/// Is `w` a short form (`cust`), not a word of its own?
fn is_abbreviation(w: &str) -> bool {
    ABBREVIATIONS.iter().any(|(a, _)| *a == w)
}

/// Is `w` a word `segment` may cut out: a known abbreviation, a canonical word, or a synonym.
pub fn dictionary_word(w: &str) -> bool {
    ABBREVIATIONS.iter().any(|(a, f)| *a == w || *f == w)
        || SYNONYMS.iter().any(|g| g.contains(&w))
        || [
            "legacy", "new", "old", "line", "order", "date", "flag", "first", "last", "is",
        ]
        .contains(&w)
}

/// The canonical words of a column or table name; `vocabulary` helps cut run-together words.
pub fn words(ident: &str, vocabulary: &dyn Fn(&str) -> bool) -> Vec<String> {
    split(ident)
        .into_iter()
        .flat_map(|w| segment(&singular(&w), &|p| vocabulary(p) || dictionary_word(p)))
        .map(|w| canonical(&w))
        .flat_map(|w| match PHRASES.iter().find(|(p, _)| *p == w) {
            Some((_, words)) => words.iter().map(|s| s.to_string()).collect(),
            None => vec![w],
        })
        .filter(|w| !NOISE.contains(&w.as_str()))
        .collect()
}

/// The words of a table name without the prefixes that only say "table" (`tbl_`, `T_`).
pub fn table_words(name: &str, vocabulary: &dyn Fn(&str) -> bool) -> Vec<String> {
    let w = words(name, vocabulary);
    let kept: Vec<String> = w
        .iter()
        .filter(|x| !TABLE_NOISE.contains(&x.as_str()))
        .cloned()
        .collect();
    if kept.is_empty() {
        w
    } else {
        kept
    }
}

/// A column's words with its table's name taken off the front (`CustName` in `tbl_Customer`
/// is `name`), when something is left.
pub fn column_words(column: &[String], table: &[String]) -> Vec<String> {
    if !table.is_empty() && column.len() > table.len() && column[..table.len()] == *table {
        return column[table.len()..].to_vec();
    }
    // The first table word alone as a prefix (`OrderLineQty` → `line quantity` is not cut,
    // but `CustName` in `tbl_CustomerMaster` → `name`).
    if column.len() > 1 && table.first() == column.first() && table.len() > 1 {
        let rest = column[1..].to_vec();
        // `OrderNo` in `tbl_OrderLine` is the order's number, not the line's.
        let generic =
            rest.len() == 1 && ["id", "number", "code", "key"].contains(&rest[0].as_str());
        if rest.first() != table.get(1) && !generic {
            return rest;
        }
    }
    column.to_vec()
}

/// How alike two canonical words are: 1 equal, 0.85 synonyms, 0.8 one abbreviates the other,
/// less for near spellings; 0 otherwise.
pub fn word_score(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    if SYNONYMS.iter().any(|g| g.contains(&a) && g.contains(&b)) {
        return 0.85;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if short.len() >= 3 && long.starts_with(short) {
        return 0.8;
    }
    if short.len() >= 2
        && short.chars().next() == long.chars().next()
        && is_subsequence(short, long)
        && short.len() * 10 <= long.len() * 6
    {
        return 0.7;
    }
    let d = edit_distance(a, b);
    let ratio = 1.0 - d as f64 / long.len().max(1) as f64;
    if long.len() >= 5 && ratio >= 0.8 {
        return ratio * 0.8;
    }
    0.0
}

fn is_subsequence(short: &str, long: &str) -> bool {
    let mut it = long.chars();
    short.chars().all(|c| it.any(|l| l == c))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// How alike two names are, given as canonical words: 1 for the same words in the same order,
/// 0.95 in another order, else the share of words that pair up (each word at most once, with
/// [`word_score`] credit).
pub fn similarity(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    if a == b {
        return 1.0;
    }
    let mut sa = a.to_vec();
    let mut sb = b.to_vec();
    sa.sort();
    sb.sort();
    if sa == sb {
        return 0.95;
    }
    // A generic word (`id`, `number`) counts less than the words that say what it is of.
    let weight = |w: &str| {
        if ["id", "number", "code"].contains(&w) {
            0.6
        } else {
            1.0
        }
    };
    // Greedy pairing of words, best pairs first.
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            let s = word_score(x, y);
            if s > 0.0 {
                pairs.push((s, i, j));
            }
        }
    }
    pairs.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let (mut used_a, mut used_b) = (vec![false; a.len()], vec![false; b.len()]);
    let mut sum = 0.0;
    for (s, i, j) in pairs {
        if !used_a[i] && !used_b[j] {
            used_a[i] = true;
            used_b[j] = true;
            sum += s * (weight(&a[i]) + weight(&b[j])) / 2.0;
        }
    }
    let total: f64 =
        a.iter().map(|w| weight(w)).sum::<f64>() + b.iter().map(|w| weight(w)).sum::<f64>();
    (2.0 * sum / total).min(0.94)
}

/// A singular snake_case name for an entity made of a table's words.
pub fn entity_name(words: &[String]) -> String {
    let name = words.join("_");
    if name.is_empty() {
        "entity".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        words(s, &|_| false)
    }

    #[test]
    fn identifiers_split_into_canonical_words() {
        assert_eq!(split("CustID"), ["cust", "id"]);
        assert_eq!(split("ORDER_NO"), ["order", "no"]);
        assert_eq!(split("HTTPStatus"), ["http", "status"]);
        assert_eq!(split("tbl_OrderLine2"), ["tbl", "order", "line", "2"]);
        assert_eq!(w("CustName"), ["customer", "name"]);
        assert_eq!(w("IsActive"), ["active"]);
        assert_eq!(w("order_lines"), ["order", "line"]);
        assert_eq!(w("categories"), ["category"]);
        assert_eq!(w("status"), ["status"]);
        assert_eq!(table_words("tbl_Customer", &|_| false), ["customer"]);
        assert_eq!(table_words("TOrders", &|_| false), ["order"]);
    }

    #[test]
    fn run_together_words_are_cut_with_a_vocabulary() {
        assert_eq!(w("custname"), ["customer", "name"]);
        assert_eq!(w("ORDERNO"), ["order", "number"]);
        let vocab = |p: &str| ["unit", "price"].contains(&p);
        assert_eq!(words("unitprice", &vocab), ["unit", "price"]);
        assert_eq!(w("xyzzy"), ["xyzzy"]);
        assert_eq!(w("hiredate"), ["hire", "date"]);
    }

    #[test]
    fn the_tables_name_comes_off_a_columns_front() {
        let t = table_words("tbl_Customer", &|_| false);
        assert_eq!(column_words(&w("CustName"), &t), ["name"]);
        assert_eq!(column_words(&w("CustID"), &t), ["id"]);
        assert_eq!(column_words(&w("Customer"), &t), ["customer"]);
        let ol = w("OrderLine");
        assert_eq!(column_words(&w("OrderNo"), &ol), ["order", "number"]);
    }

    #[test]
    fn similarity_ranks_equal_reordered_and_related_names() {
        assert_eq!(similarity(&w("OrderNo"), &w("order_number")), 1.0);
        assert_eq!(similarity(&w("DateCreated"), &w("created_date")), 0.95);
        let s = similarity(&w("Phone"), &w("phone_number"));
        assert!((0.5..0.95).contains(&s), "{s}");
        assert!(
            similarity(&w("CustName"), &w("customer_email"))
                < similarity(&w("CustName"), &w("customer_name"))
        );
        assert_eq!(similarity(&w("Qty"), &w("price")), 0.0);
        // A shared generic word alone is weak evidence.
        assert!(similarity(&w("number"), &w("line_no")) < 0.6);
        assert!(similarity(&w("ManagerID"), &w("id")) < 0.6);
        assert!(word_score("quantity", "quantitiy") > 0.5);
    }
}
