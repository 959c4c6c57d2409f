"""Run the same task over many repositories, at most N running at once, resumable.

python examples/fan_out.py "Upgrade the CI to Python 3.12" owner/a owner/b --journal fan.db
"""

from __future__ import annotations

import argparse
import asyncio

from _common import example_client

DEFAULT_REPOS = ["demo/alpha", "demo/beta", "demo/gamma", "demo/delta"]


async def main(message: str, repos: list[str], journal: str | None) -> None:
    async with example_client() as client:
        jobs = ({"message": message, "repository": repo, "key": repo} for repo in repos)
        run = client.run_batch(jobs, max_running=2, journal=journal, poll_interval=1.0)
        async with run:
            async for result in run:
                p = run.progress
                print(
                    f"{result.job.repository:<20} {result.state:<9} "
                    f"(running {p.running}, finished {p.finished}, failed {p.failed})"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("message", nargs="?", default="Add a CONTRIBUTING.md")
    parser.add_argument("repos", nargs="*", default=DEFAULT_REPOS)
    parser.add_argument("--journal", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.message, args.repos, args.journal))
