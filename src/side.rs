//! Which database a thing belongs to: A (the old system) or B (the new one). Its own module
//! because nearly every part of tandem speaks of sides; `config` re-exports it.

use std::fmt;

/// Which database: A (the old system) or B (the new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The old system.
    A,
    /// The new system.
    B,
}

/// Both sides, for code that treats them alike.
pub(crate) const SIDES: [Side; 2] = [Side::A, Side::B];

impl Side {
    /// The opposite side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// Lower-case name, as used for keys in the config file: `"a"` or `"b"`.
    pub fn name(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}
