/**
 * Parses Prometheus exposition text with the official Python client's parser (Debian python3-prometheus-client),
 * an implementation independent of prom-client: what a real scraper would accept.
 */
import { execFileSync } from 'node:child_process';

export interface Family {
  type: string;
  help: string;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

const SCRIPT = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "help": f.documentation,
                   "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
print(json.dumps(out))
`;

export function parsePrometheus(text: string): Record<string, Family> {
  return JSON.parse(execFileSync('/usr/bin/python3', ['-c', SCRIPT], { input: text }).toString()) as Record<
    string,
    Family
  >;
}
