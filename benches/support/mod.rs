//! Shared pieces of the `compare` benchmark: clusters and connections ([`pg`]), the tools under
//! comparison ([`peers`]), processes and `/proc` readings ([`procs`]) and the result table
//! ([`report`]).

pub mod peers;
pub mod pg;
pub mod procs;
pub mod report;
