//! The WASI 0.2 adapter's one error mapping: [`crate::LockError`] onto the WIT `error` of 0.2.1 and
//! of 0.1.0, and the host's unlock statuses and leaders onto theirs.

use crate::calls::wit_mapping;

wit_mapping!(crate::p2::bindings::latchkey::lock::locks);
wit_mapping!(leader: crate::p2::bindings::latchkey::lock::locks);
wit_mapping!(crate::p2::v0_1::bindings::latchkey::lock::locks);
