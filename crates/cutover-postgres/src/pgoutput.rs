//! A decoder for PostgreSQL's `pgoutput` logical replication messages (protocol version 1),
//! kept apart from any I/O. Malformed input is an error, never a panic (fuzzed in the tests).
//!
//! Reference: "Logical Replication Message Formats" in the PostgreSQL documentation.

/// One column value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// An unchanged TOASTed value the server did not send (UPDATE only).
    Unchanged,
    /// The value in the type's text output format.
    Text(Vec<u8>),
    /// The value in the type's binary format (`binary` option).
    Binary(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the key, by default the primary key).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// Which old row image an UPDATE or DELETE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldImage {
    /// Only the replica identity's columns (`K`).
    Key,
    /// The whole old row (`O`, REPLICA IDENTITY FULL).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: u64,
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        commit_time: i64,
    },
    Origin {
        lsn: u64,
        name: String,
    },
    Relation(Relation),
    Type {
        id: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        old: Option<(OldImage, Vec<Datum>)>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: (OldImage, Vec<Datum>),
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// `pg_logical_emit_message` output.
    LogicalMessage {
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput message ends early at byte {0}")]
    Truncated(usize),
    #[error("unknown pgoutput message type {0:?}")]
    UnknownMessage(char),
    #[error("invalid pgoutput {what} at byte {at}")]
    Invalid { what: &'static str, at: usize },
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.b.len() - self.at < n {
            return Err(DecodeError::Truncated(self.at));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        let s = self.take(2)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    fn cstring(&mut self) -> Result<String, DecodeError> {
        let rest = &self.b[self.at..];
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or(DecodeError::Truncated(self.b.len()))?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| DecodeError::Invalid {
            what: "string",
            at: self.at,
        })?;
        self.at += end + 1;
        Ok(s.to_owned())
    }
    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let at = self.at;
        let n = self.i16()?;
        if n < 0 {
            return Err(DecodeError::Invalid {
                what: "column count",
                at,
            });
        }
        let mut out = Vec::with_capacity((n as usize).min(self.b.len() - self.at));
        for _ in 0..n {
            let at = self.at;
            out.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.i32()?;
                    let len = usize::try_from(len).map_err(|_| DecodeError::Invalid {
                        what: "value length",
                        at,
                    })?;
                    let v = self.take(len)?.to_vec();
                    if kind == b't' {
                        Datum::Text(v)
                    } else {
                        Datum::Binary(v)
                    }
                }
                _ => {
                    return Err(DecodeError::Invalid {
                        what: "column kind",
                        at,
                    })
                }
            });
        }
        Ok(out)
    }
    fn old_image(&mut self, tag: u8) -> Result<(OldImage, Vec<Datum>), DecodeError> {
        let kind = match tag {
            b'K' => OldImage::Key,
            b'O' => OldImage::Full,
            _ => {
                return Err(DecodeError::Invalid {
                    what: "old tuple tag",
                    at: self.at - 1,
                })
            }
        };
        Ok((kind, self.tuple()?))
    }
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<(), DecodeError> {
        let at = self.at;
        if self.u8()? != tag {
            return Err(DecodeError::Invalid { what, at });
        }
        Ok(())
    }
}

/// Decodes one pgoutput message (the payload of an XLogData).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { b: bytes, at: 0 };
    let tag = r.u8()?;
    let msg = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit {
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                commit_time: r.i64()?,
            }
        }
        b'O' => Message::Origin {
            lsn: r.u64()?,
            name: r.cstring()?,
        },
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstring()?;
            let name = r.cstring()?;
            let replica_identity = r.u8()?;
            let at = r.at;
            let n = r.i16()?;
            if n < 0 {
                return Err(DecodeError::Invalid {
                    what: "column count",
                    at,
                });
            }
            let mut columns = Vec::with_capacity((n as usize).min(bytes.len()));
            for _ in 0..n {
                let flags = r.u8()?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name: r.cstring()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type {
            id: r.u32()?,
            namespace: r.cstring()?,
            name: r.cstring()?,
        },
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N', "insert tuple tag")?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut tag = r.u8()?;
            let old = if tag == b'K' || tag == b'O' {
                let old = r.old_image(tag)?;
                tag = r.u8()?;
                Some(old)
            } else {
                None
            };
            if tag != b'N' {
                return Err(DecodeError::Invalid {
                    what: "update tuple tag",
                    at: r.at - 1,
                });
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let tag = r.u8()?;
            Message::Delete {
                relation,
                old: r.old_image(tag)?,
            }
        }
        b'T' => {
            let n = r.u32()?;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity((n as usize).min(bytes.len()));
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        b'M' => {
            let transactional = r.u8()? != 0;
            let lsn = r.u64()?;
            let prefix = r.cstring()?;
            let len = r.u32()? as usize;
            Message::LogicalMessage {
                transactional,
                lsn,
                prefix,
                content: r.take(len)?.to_vec(),
            }
        }
        other => return Err(DecodeError::UnknownMessage(other as char)),
    };
    if r.at != bytes.len() {
        return Err(DecodeError::Invalid {
            what: "trailing bytes",
            at: r.at,
        });
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(out: &mut Vec<u8>, cols: &[Datum]) {
        out.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for c in cols {
            match c {
                Datum::Null => out.push(b'n'),
                Datum::Unchanged => out.push(b'u'),
                Datum::Text(v) | Datum::Binary(v) => {
                    out.push(if matches!(c, Datum::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    out.extend_from_slice(v);
                }
            }
        }
    }

    fn samples() -> Vec<(Vec<u8>, Message)> {
        let mut v = Vec::new();
        let mut b = vec![b'R'];
        b.extend_from_slice(&16385u32.to_be_bytes());
        b.extend_from_slice(b"Mixed Case\0Order\0");
        b.push(b'd');
        b.extend_from_slice(&2i16.to_be_bytes());
        b.push(1);
        b.extend_from_slice(b"select\0");
        b.extend_from_slice(&20u32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(0);
        b.extend_from_slice(b"body\0");
        b.extend_from_slice(&25u32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        v.push((
            b,
            Message::Relation(Relation {
                id: 16385,
                namespace: "Mixed Case".into(),
                name: "Order".into(),
                replica_identity: b'd',
                columns: vec![
                    RelationColumn {
                        key: true,
                        name: "select".into(),
                        type_oid: 20,
                        type_modifier: -1,
                    },
                    RelationColumn {
                        key: false,
                        name: "body".into(),
                        type_oid: 25,
                        type_modifier: -1,
                    },
                ],
            }),
        ));
        let new = vec![Datum::Text(b"42".to_vec()), Datum::Unchanged];
        let old = vec![Datum::Text(b"41".to_vec()), Datum::Null];
        let mut b = vec![b'U'];
        b.extend_from_slice(&16385u32.to_be_bytes());
        b.push(b'K');
        tuple(&mut b, &old);
        b.push(b'N');
        tuple(&mut b, &new);
        v.push((
            b,
            Message::Update {
                relation: 16385,
                old: Some((OldImage::Key, old.clone())),
                new: new.clone(),
            },
        ));
        let mut b = vec![b'I'];
        b.extend_from_slice(&7u32.to_be_bytes());
        b.push(b'N');
        tuple(&mut b, &[Datum::Binary(vec![0, 1]), Datum::Null]);
        v.push((
            b,
            Message::Insert {
                relation: 7,
                new: vec![Datum::Binary(vec![0, 1]), Datum::Null],
            },
        ));
        let mut b = vec![b'D'];
        b.extend_from_slice(&7u32.to_be_bytes());
        b.push(b'O');
        tuple(&mut b, &old);
        v.push((
            b,
            Message::Delete {
                relation: 7,
                old: (OldImage::Full, old),
            },
        ));
        let mut b = vec![b'T'];
        b.extend_from_slice(&2u32.to_be_bytes());
        b.push(3);
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&8u32.to_be_bytes());
        v.push((
            b,
            Message::Truncate {
                relations: vec![7, 8],
                cascade: true,
                restart_identity: true,
            },
        ));
        let mut b = vec![b'B'];
        b.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        b.extend_from_slice(&5i64.to_be_bytes());
        b.extend_from_slice(&99u32.to_be_bytes());
        v.push((
            b,
            Message::Begin {
                final_lsn: 0x1_0000_0010,
                commit_time: 5,
                xid: 99,
            },
        ));
        v
    }

    #[test]
    fn decodes_every_message_kind() {
        for (bytes, expected) in samples() {
            assert_eq!(decode(&bytes).unwrap(), expected);
        }
    }

    #[test]
    fn every_truncation_is_an_error_and_garbage_never_panics() {
        for (bytes, _) in samples() {
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode(&longer).is_err());
        }
        let mut rng = fastrand::Rng::with_seed(9);
        let tags = b"BCORYIUDTMx";
        for _ in 0..20_000 {
            let mut b: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            if let Some(first) = b.first_mut() {
                *first = tags[rng.usize(..tags.len())];
            }
            let _ = decode(&b);
        }
    }
}
