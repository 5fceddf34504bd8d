//! AuthRule evaluation (SPEC §5).
