"""The tally of what preprocessing removed, step by step, kept in uns["omicsgen"]["filtered"]."""


def record_removed(removed: list[dict], step: str, n_obs: int, n_vars: int, reason: str) -> None:
    removed.append({"step": step, "removed_obs": n_obs, "removed_vars": n_vars, "reason": reason})
