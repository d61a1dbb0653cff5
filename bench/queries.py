"""The query scenarios' data: one location filled straight into its shard with COPY.

ListResources with a filter, a text search and GetLocationStatistics are only meaningful on
a location with many resources (100,000 by default), which the API would take minutes to
create; the rows are written with COPY into the location's shard database, then VACUUM
ANALYZE (what autovacuum does after a bulk load: statistics and merged GIN pending lists).
"""

from __future__ import annotations

import json
import random
import string
from datetime import UTC, datetime, timedelta

import psycopg


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(7)).title()


# Share of the rows per type: patients are searched, appointments filtered and summarised.
MIX = (("patients", 0.5), ("appointments", 0.4), ("invoices", 0.1))
SURNAMES = tuple(_word(random.Random(n)) for n in range(5000))
# The columns a bulk load writes, in the order of its rows.
COPY_RESOURCES = (
    "COPY resources (business_id, location_id, resource_type, resource_id, business_type, data,"
    " start_time, end_time, create_time, update_time) FROM STDIN"
)
STATUSES = ("active", "archived", "new", "confirmed", "done", "cancelled")
TREATMENTS = ("cleaning", "filling", "crown", "implant", "whitening", "extraction")


def seed_location(dsn: str, business_id: str, location_id: str, rows: int) -> float:
    """Write ``rows`` resources into one location of a shard; returns seconds taken."""
    started = datetime.now(UTC)
    rng = random.Random(7)
    now = datetime.now(UTC)
    with psycopg.connect(dsn, autocommit=True) as conn:
        with (
            conn.cursor() as cursor,
            cursor.copy(COPY_RESOURCES) as copy,
        ):
            index = 0
            for resource_type, share in MIX:
                for _ in range(int(rows * share)):
                    created = now - timedelta(minutes=rng.randint(0, 60 * 24 * 400))
                    start = now + timedelta(minutes=rng.randint(-60 * 24 * 200, 60 * 24 * 60))
                    data: dict[str, object] = {"status": rng.choice(STATUSES)}
                    if resource_type == "patients":
                        data |= {
                            "first_name": rng.choice(SURNAMES),
                            "last_name": rng.choice(SURNAMES),
                            "phone": f"+40 7{rng.randint(0, 99_999_999):08d}",
                            "email": f"p{index}@example.com",
                            "age": rng.randint(1, 95),
                        }
                    elif resource_type == "appointments":
                        data |= {"treatment": rng.choice(TREATMENTS), "price": rng.randint(50, 2000)}
                    else:
                        data |= {"total": rng.randint(50, 5000), "number": f"INV-{index:07d}"}
                    end = start + timedelta(minutes=30) if resource_type == "appointments" else None
                    copy.write_row(
                        (
                            business_id,
                            location_id,
                            resource_type,
                            f"q{index:07d}",
                            "dental",
                            json.dumps(data),
                            start if resource_type == "appointments" else None,
                            end,
                            created,
                            created,
                        )
                    )
                    index += 1
        conn.execute("VACUUM ANALYZE resources")
    return (datetime.now(UTC) - started).total_seconds()
