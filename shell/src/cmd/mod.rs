//! Commands: the table ([`table`]) and line parsing ([`parse`]).

pub mod parse;
pub mod table;

pub use parse::{Invocation, LineError, parse_line};
pub use table::{COMMANDS, Command, Handler};
