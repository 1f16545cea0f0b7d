//! Integration tests of the MySQL/MariaDB engine against the shared throwaway MariaDB (10.11
//! here: no MySQL 8 server is available on this machine). Each test has a database of its own.

mod source;
mod sync;
mod target;
mod verify;
