"""Secrets at rest (issue 17): web session ids stored hashed, SecureOn passwords encrypted.

Existing sessions keep working: each stored id is replaced by its SHA-256 hash, which is what mko now
looks a cookie up by. Existing SecureOn passwords are encrypted in place with the key of stored secrets
(``mko.secrets``; the key file is created beside the SQLite database if there is none yet).

Downgrading decrypts the SecureOn passwords again and ends every web session (a hash cannot be
turned back into the cookie).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import hashlib

import sqlalchemy as sa
from alembic import op

from mko.secrets import SecretBox

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _box() -> SecretBox:
    from mko.settings import get_settings

    url = op.get_bind().engine.url.render_as_string(hide_password=False)
    return SecretBox.from_settings(get_settings(), url)


def upgrade() -> None:
    bind = op.get_bind()
    sessions = bind.execute(sa.text("SELECT id FROM web_sessions")).scalars().all()
    for session_id in sessions:
        hashed = hashlib.sha256(session_id.encode()).hexdigest()
        bind.execute(
            sa.text("UPDATE web_sessions SET id = :new WHERE id = :old"), {"new": hashed, "old": session_id}
        )

    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("wol_secureon_encrypted", sa.Text(), nullable=True))
    rows = bind.execute(sa.text("SELECT id, wol_secureon FROM nodes WHERE wol_secureon IS NOT NULL")).all()
    if rows:
        box = _box()
        for node_id, plain in rows:
            bind.execute(
                sa.text("UPDATE nodes SET wol_secureon_encrypted = :secret WHERE id = :id"),
                {"secret": box.encrypt(plain), "id": node_id},
            )
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("wol_secureon")


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("wol_secureon", sa.String(length=17), nullable=True))
    rows = bind.execute(
        sa.text("SELECT id, wol_secureon_encrypted FROM nodes WHERE wol_secureon_encrypted IS NOT NULL")
    ).all()
    if rows:
        box = _box()
        for node_id, token in rows:
            bind.execute(
                sa.text("UPDATE nodes SET wol_secureon = :plain WHERE id = :id"),
                {"plain": box.decrypt(token), "id": node_id},
            )
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("wol_secureon_encrypted")
    bind.execute(sa.text("DELETE FROM web_sessions"))
