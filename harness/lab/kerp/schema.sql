-- Schema of the reference K-ERP database used by the embedded lab.
-- Foreign keys are declared (as in production); the integrity checks still verify
-- them with anti-joins, because a restore with disabled triggers can break them.

CREATE TABLE IF NOT EXISTS companies (
    id           bigint PRIMARY KEY,
    name         text   NOT NULL,
    business_no  text   NOT NULL UNIQUE,
    tier         text   NOT NULL CHECK (tier IN ('platinum', 'gold', 'silver')),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Chart of accounts: a hierarchy per company (parent_id NULL = root account).
CREATE TABLE IF NOT EXISTS accounts (
    id          bigint PRIMARY KEY,
    company_id  bigint NOT NULL REFERENCES companies(id),
    code        text   NOT NULL,
    name        text   NOT NULL,
    kind        text   NOT NULL CHECK (kind IN ('asset', 'liability', 'equity', 'revenue', 'expense')),
    parent_id   bigint REFERENCES accounts(id),
    UNIQUE (company_id, code)
);

CREATE TABLE IF NOT EXISTS users (
    id             bigint PRIMARY KEY,
    company_id     bigint NOT NULL REFERENCES companies(id),
    email          text   NOT NULL UNIQUE,
    password_hash  text   NOT NULL,
    role           text   NOT NULL DEFAULT 'accountant'
);

-- A voucher (전표) with double-entry lines; request_id makes creation idempotent
-- and is the record id of the workload ledger.
CREATE TABLE IF NOT EXISTS vouchers (
    id            bigserial PRIMARY KEY,
    company_id    bigint NOT NULL REFERENCES companies(id),
    request_id    text   UNIQUE,
    voucher_date  date   NOT NULL,
    description   text   NOT NULL DEFAULT '',
    created_by    bigint,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS voucher_lines (
    id          bigserial PRIMARY KEY,
    voucher_id  bigint NOT NULL REFERENCES vouchers(id),
    line_no     int    NOT NULL,
    account_id  bigint NOT NULL REFERENCES accounts(id),
    debit       numeric(18, 2) NOT NULL DEFAULT 0 CHECK (debit >= 0),
    credit      numeric(18, 2) NOT NULL DEFAULT 0 CHECK (credit >= 0),
    UNIQUE (voucher_id, line_no)
);
CREATE INDEX IF NOT EXISTS voucher_lines_voucher_id ON voucher_lines (voucher_id);

-- Gap-free counters: incremented inside the writing transaction, so a rollback
-- leaves no gap (a sequence would).
CREATE TABLE IF NOT EXISTS counters (
    name        text   PRIMARY KEY,
    last_value  bigint NOT NULL
);

-- Audit trail with a gap-free global sequence (counter 'audit_log').
CREATE TABLE IF NOT EXISTS audit_log (
    seq        bigint PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text   NOT NULL,
    action     text   NOT NULL,
    entity     text   NOT NULL,
    entity_id  text   NOT NULL
);

-- Tax invoices (세금계산서) with gap-free numbers per company
-- (counter 'tax_invoice:<company_id>').
CREATE TABLE IF NOT EXISTS tax_invoices (
    id           bigserial PRIMARY KEY,
    company_id   bigint NOT NULL REFERENCES companies(id),
    invoice_no   bigint NOT NULL,
    voucher_id   bigint REFERENCES vouchers(id),
    amount       numeric(18, 2) NOT NULL CHECK (amount > 0),
    popbill_ref  text   NOT NULL,
    issued_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (company_id, invoice_no)
);

-- JWT signing keys (ES256): exactly one 'current' key signs; 'retired' keys still verify; 'revoked' keys
-- (a compromise) verify nothing and their private half is erased. Private keys are stored wrapped with a
-- key derived from the app's secret. Every replica of both regions reads this table (harness/lab/kerp/keyring.py).
CREATE TABLE IF NOT EXISTS signing_keys (
    kid              text PRIMARY KEY,
    alg              text NOT NULL,
    state            text NOT NULL CHECK (state IN ('current', 'retired', 'revoked')),
    public_pem       text NOT NULL,
    private_wrapped  text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at       timestamptz,
    reason           text,
    CHECK (state = 'revoked' OR private_wrapped IS NOT NULL OR state = 'retired')
);
CREATE UNIQUE INDEX IF NOT EXISTS signing_keys_one_current ON signing_keys ((true)) WHERE state = 'current';
