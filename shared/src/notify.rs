//! DLR FL Demonstrator notifications (protocols.md §2): types, parsing and
//! validation, reference status codes.
