"""Where the launcher reads its inputs and keeps its brokers' state."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The one table of the brokers (name, URL variable, default URL, ...): see broker_table.
BROKER_TABLE = ROOT / "brokers.json"
#: Data, logs and pid files of the brokers run natively, one folder each.
STATE_DIR = ROOT / ".services"
#: The Docker mode's brokers.
COMPOSE_FILE = ROOT / "compose.yaml"
#: The Kafka broker's Maven project (pom.xml) and configuration templates.
KAFKA_DIR = ROOT / "scripts" / "kafka"
