"""Secrets at rest (issue 17): web session ids stored hashed, SecureOn passwords encrypted.

Existing sessions keep working: each stored id is replaced by its SHA-256 hash, which is what mko now
looks a cookie up by. Existing SecureOn passwords are encrypted in place with the key of stored secrets
(``mko.platform.secrets``; the key file is created beside the SQLite database if there is none yet).

Downgrading decrypts the SecureOn passwords again and ends every web session (a hash cannot be
turned back into the cookie).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import hashlib
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from mko.platform.secrets import SecretBox

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _box() -> SecretBox:
    from mko.platform.settings import get_settings

    url = op.get_bind().engine.url.render_as_string(hide_password=False)
    return SecretBox.from_settings(get_settings(), url)


def _move_secureon(source: str, target: str, convert: Callable[[SecretBox, str], str]) -> None:
    """Add column ``target``, fill it from ``source`` through ``convert``, drop ``source``."""
    bind = op.get_bind()
    kind = sa.Text() if target == "wol_secureon_encrypted" else sa.String(length=17)
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column(target, kind, nullable=True))
    nodes = sa.table("nodes", sa.column("id"), sa.column(source), sa.column(target))
    rows = bind.execute(sa.select(nodes.c.id, nodes.c[source]).where(nodes.c[source].is_not(None))).all()
    if rows:
        box = _box()
        for node_id, value in rows:
            changed = {target: convert(box, value)}
            bind.execute(sa.update(nodes).where(nodes.c.id == node_id).values(changed))
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column(source)


def upgrade() -> None:
    bind = op.get_bind()
    sessions = bind.execute(sa.text("SELECT id FROM web_sessions")).scalars().all()
    for session_id in sessions:
        hashed = hashlib.sha256(session_id.encode()).hexdigest()
        bind.execute(
            sa.text("UPDATE web_sessions SET id = :new WHERE id = :old"), {"new": hashed, "old": session_id}
        )
    _move_secureon("wol_secureon", "wol_secureon_encrypted", SecretBox.encrypt)


def downgrade() -> None:
    _move_secureon("wol_secureon_encrypted", "wol_secureon", SecretBox.decrypt)
    op.get_bind().execute(sa.text("DELETE FROM web_sessions"))
