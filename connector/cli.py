"""`illume-sync`: the ILLUME loop between Label Studio, the ML backend and the training job.

Exit codes: 0 done, 1 a problem you can fix (the message says what to do), 2 wrong usage.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from illume.critic import ACCEPT_THRESHOLD, DEFAULT_CRITIC
from illume.errors import IllumeError

EXIT_PROBLEM = 1


class Commands(click.Group):
    """Turns an IllumeError into its message on stderr and exit code 1 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except IllumeError as exc:
            click.secho(f"error: {exc.what}", fg="red", err=True)
            if exc.todo:
                click.echo(f"  -> {exc.todo}", err=True)
            ctx.exit(EXIT_PROBLEM)


def server_options(command):
    command = click.option("--api-key", envvar="LABEL_STUDIO_API_KEY", show_envvar=True,
                           help="Label Studio API key: personal access token or legacy token.")(command)
    command = click.option("--url", envvar="LABEL_STUDIO_URL", show_envvar=True,
                           help="Label Studio address, e.g. http://localhost:8080.")(command)
    return command


def project_option(command):
    return click.option("--project", "-p", required=True, envvar="ILLUME_PROJECT", show_envvar=True,
                        help="Project id or exact title.")(command)


def _client(url, api_key):
    from connector.client import connect

    return connect(url, api_key)


def _project(client, ref):
    from connector.project import find_project

    return find_project(client, ref)


def crowd_options(command):
    """The simulated annotators: how many, how strict, how noisy (annotate, loop, demo)."""
    for option in reversed([
        click.option("--annotators", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Simulated annotators per task (each a Label Studio user)."),
        click.option("--critic", default=DEFAULT_CRITIC, show_default=True,
                     help="Who ticks: a registered critic or module:Class (a subclass of illume.critic.Critic)."),
        click.option("--threshold", type=click.FloatRange(0, 1),
                     help=f"The critic's acceptance threshold (default: its own; {ACCEPT_THRESHOLD} ROUGE-L for rouge-l)."),
        click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                     help="Probability that a simulated annotator flips a decision."),
        click.option("--seed", type=int, default=0, show_default=True)]):
        command = option(command)
    return command


def gate_options(command):
    """The promotion gate: which rationale metric, how much worse it may be, and how many
    points of answer accuracy a new adapter may lose (train, loop)."""
    for option in reversed([
        click.option("--gate-metric", default="rouge_l", show_default=True, help="Rationale metric compared by the gate."),
        click.option("--tolerance", type=float, default=0.0, show_default=True,
                     help="Promote even when the new rationale score is lower by at most this much."),
        click.option("--max-accuracy-drop", type=click.FloatRange(min=0), default=2.0, show_default=True,
                     help="Refuse a new adapter whose held-out answer accuracy is lower by more points than this."),
        click.option("--eval-batch-size", type=click.IntRange(min=1),
                     help="Held-out items per generate call when evaluating (default 8; lower it when memory is short).")]):
        command = option(command)
    return command


class Progress:
    """Counts on stderr, at most every `every` units (scripts read stdout only)."""

    def __init__(self, label: str, total: int | None = None, every: int = 1) -> None:
        self.label, self.total, self.every, self.done, self.shown = label, total, every, 0, 0

    def __call__(self, amount: int = 1) -> None:
        self.done += amount
        if self.done - self.shown >= self.every or self.done == self.total:
            self.shown = self.done
            of = f"/{self.total}" if self.total else ""
            click.echo(f"\r{self.label}: {self.done}{of}", err=True, nl=False)

    def end(self) -> None:
        if self.shown:
            click.echo("", err=True)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="illume-studio")
def main() -> None:
    """Run the ILLUME loop with Label Studio: the model proposes rationales, people tick the
    right ones, the ticks become training data, the retrained model proposes better ones.

    \b
    Typical round:
      illume-sync init --project vqa --backend-url http://backend:9090
      illume-sync import --project vqa items.jsonl
      illume-sync predict --project vqa
      (annotators tick candidates in Label Studio, or: illume-sync annotate --simulate)
      illume-sync export --project vqa --out exports/round-1 --previous exports/round-0
      illume-sync train --export exports/round-1 --base-model MODEL --out runs/round-1 ...

    Label Studio is given by --url/--api-key or LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY.
    Exit codes: 0 done, 1 a problem to fix (the message says what to do), 2 wrong usage.
    """


@main.command()
@server_options
@click.option("--project", "-p", "title", required=True, help="Project title (reused when it exists).")
@click.option("--label-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labeling config XML (default: label_config/illume_rationales.xml).")
@click.option("--overlap", type=click.IntRange(min=1), default=1, show_default=True,
              help="Annotators per task (crowd-sourcing; export then votes by majority).")
@click.option("--backend-url", help="ML backend address as Label Studio reaches it, e.g. http://backend:9090.")
@click.option("--backend-title", default="illume", show_default=True, help="ML backend name in Label Studio.")
@click.option("--backend-user", help="HTTP Basic user Label Studio sends to the backend.")
@click.option("--backend-password", envvar="ILLUME_BACKEND_PASSWORD", help="HTTP Basic password for the backend.")
def init(url, api_key, title, label_config, overlap, backend_url, backend_title, backend_user, backend_password):
    """Create the project (or reuse the one with this title) and connect the ML backend.

    Tasks are offered lowest model score first (Label Studio's uncertainty sampling), so
    annotators see the items the model is least sure of: the project's model version follows
    the version the backend serves (set here, and by `predict` once predictions of it exist).
    Safe to run again.
    """
    from connector.project import init_project, read_label_config

    client = _client(url, api_key)
    auth = (backend_user, backend_password or "") if backend_user else None
    result = init_project(client, title, read_label_config(label_config), overlap, backend_url, backend_title, auth)
    verb = "created" if result.created else "reused"
    click.echo(f"{verb} project {result.project['id']} {title!r} (overlap {overlap}"
               + (f", backend {backend_url} serving model version {result.model_version!r})" if backend_url else ")"))
    click.echo(json.dumps({"project": result.project["id"], "created": result.created}))


@main.command(name="import")
@server_options
@project_option
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--local-files-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              envvar="LOCAL_FILES_DOCUMENT_ROOT", show_envvar=True,
              help="Label Studio's local-files root as this machine sees it (for local image files).")
@click.option("--limit", type=click.IntRange(min=1), help="Import at most this many items.")
@click.option("--round", "round_", type=click.IntRange(min=1), default=1, show_default=True,
              help="Labeling round: each round of the loop gets its own tasks (fresh candidates).")
def import_(url, api_key, project, source, local_files_root, limit, round_):
    """Import items (VQA-X either layout, JSONL, CSV or an image folder with a sidecar file).

    Items already in the project (same item id, same round) are skipped, so re-running adds
    only new ones. Reference explanations are stored out of the annotators' view.
    """
    from connector.importing import ImagePlacer, import_items, read_items
    from connector.project import require_schema

    client = _client(url, api_key)
    found = _project(client, project)
    schema = require_schema(found)
    items = list(read_items(source))[:limit]
    base = source if source.is_dir() else source.parent
    progress = Progress("imported", len(items))
    result = import_items(client, found["id"], items, ImagePlacer(client, found["id"], local_files_root, base), progress,
                          round_, schema)
    progress.end()
    click.echo(f"imported {result.imported} items, skipped {result.skipped} already in project {found['id']}")


@main.command()
@server_options
@project_option
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Tasks per prediction request (keep each well inside Label Studio's 100 s timeout).")
def predict(url, api_key, project, batch_size):
    """Have the ML backend predict every task lacking a prediction of the current model version."""
    from connector.predicting import predict_missing

    client = _client(url, api_key)
    found = _project(client, project)
    progress = Progress("predicted")
    result = predict_missing(client, found, batch_size, progress)
    progress.end()
    click.echo(f"{result.predicted} of {result.requested} tasks got a prediction of version {result.version!r}")
    if result.predicted < result.requested:
        raise IllumeError(f"{result.requested - result.predicted} tasks still lack a prediction",
                          "Check the ML backend's log (timeouts: lower --batch-size).")


@main.command()
@server_options
@project_option
@click.option("--simulate", is_flag=True, required=True,
              help="Annotate with the simulated critic (the only mode; people annotate in Label Studio).")
@crowd_options
def annotate(url, api_key, project, simulate, annotators, critic, threshold, error_rate, seed):
    """Tick candidates like the method's simulated critic and submit real annotations."""
    from connector.simulate import simulate as run
    from illume.critic import make_critic

    judge = make_critic(critic, threshold)
    client = _client(url, api_key)
    found = _project(client, project)
    progress = Progress("tasks", every=10)
    result = run(client, found, annotators, judge, error_rate, seed, progress)
    progress.end()
    click.echo(f"submitted {result.annotations} annotations ticking {result.ticked} of {result.shown} candidates"
               + (f"; {result.skipped_without_candidates} tasks have no candidates yet (run predict)"
                  if result.skipped_without_candidates else ""))


@main.command()
@server_options
@project_option
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Export directory (replaced atomically when it exists).")
@click.option("--previous", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An earlier export to merge: its rows and pairs carry over, without duplicates.")
@click.option("--min-agreement", type=click.IntRange(min=1),
              help="Accept a candidate when at least K annotators ticked it (default: strict majority).")
@click.option("--iteration", type=click.IntRange(min=0), help="Iteration number (default: previous + 1, or 0).")
@click.option("--round", "round_", type=click.IntRange(min=1), help="Export only this labeling round's tasks.")
def export(url, api_key, project, out, previous, min_agreement, iteration, round_):
    """Turn completed tasks into training data: rows.jsonl, preferences.jsonl, feedback.jsonl,
    manifest.json and images/.

    Rationale rows for every accepted candidate and written rationale; answer-only rows for
    items without one; preference pairs (accepted vs not) in TRL's layout. Cancelled
    annotations are skipped. Writes are atomic and repeatable.
    """
    from connector.export_project import export_project

    client = _client(url, api_key)
    found = _project(client, project)
    progress = Progress("tasks", every=200)
    manifest = export_project(client, found, out, min_agreement, previous, progress, round_)
    progress.end()
    counts, agreement = manifest["counts"], manifest["agreement"]
    click.echo(f"exported {counts['completed']} completed tasks to {out}: {counts['rationale_rows']} rationale rows "
               f"({counts['new_rationale_rows']} new), {counts['answer_rows']} answer-only rows, {counts['pairs']} "
               f"preference pairs; acceptance rate {manifest['acceptance']['rate']}; "
               f"{manifest['preticks']['accepted_preticked_unchanged']} of {manifest['preticks']['accepted']} accepted "
               f"were pre-ticks left standing; {manifest['reconciliation']['none_with_ticks']} annotations said "
               "'None' with ticks (None wins)"
               + (f"; Fleiss' kappa {agreement['fleiss_kappa']}" if agreement["fleiss_kappa"] is not None else "")
               + (f", Cohen's kappa {agreement['cohen_kappa']}" if agreement["cohen_kappa"] is not None else ""))


@main.command()
@click.option("--export", "export_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Export directory written by `illume-sync export`.")
@click.option("--base-model", required=True, help="Base model directory (or id available locally).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--eval-items", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Held-out items (JSONL of Item) for the promotion gate.")
@click.option("--serving-adapter", type=click.Path(exists=True, file_okay=False),
              help="Adapter the backend serves now (default: the base model alone).")
@gate_options
@click.option("--version", help="Model version name for the new adapter (default: the run directory's name).")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Training processes (>1 uses the deepspeed launcher).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--backend-url", envvar="ILLUME_BACKEND_URL", help="ML backend to reload on promotion.")
@click.option("--admin-token", envvar="ILLUME_ADMIN_TOKEN", help="The backend's admin token.")
@click.option("--train-arg", "train_args", multiple=True, help="Extra argument for `python -m training` (repeatable).")
@click.pass_context
def train(ctx, export_dir, base_model, out, eval_items, serving_adapter, gate_metric, tolerance, max_accuracy_drop,
          eval_batch_size, version, processes, resume, backend_url, admin_token, train_args):
    """Train an adapter on an export, evaluate it, and promote it only if it is not worse.

    Promotion reloads the backend with the new adapter and version (with --backend-url);
    then run `illume-sync predict` for the open tasks. Exit code 3: trained, not promoted.
    """
    from connector.promotion import Backend, GateSettings, promote
    from connector.training_job import read_eval_items, run_training, training_command

    backend = Backend.from_options(backend_url, admin_token)  # refused before hours of training, not after
    items = read_eval_items(eval_items) if eval_items else []
    version = version or out.name
    command = training_command(export_dir, base_model, out, eval_items, version, processes, resume, train_args,
                               eval_batch_size)
    adapter = run_training(command, out / "train.log", echo=lambda line: click.echo(line, err=True))
    click.echo(f"trained adapter {adapter}")
    result = promote(adapter, version, base_model, out, eval_items=items, serving_adapter=serving_adapter,
                     settings=GateSettings(gate_metric, tolerance, max_accuracy_drop, eval_batch_size),
                     backend=backend, say=click.echo)
    if not result.promoted:
        ctx.exit(3)


@main.command()
@click.option("--backend-url", envvar="ILLUME_BACKEND_URL", required=True, help="ML backend address.")
@click.option("--admin-token", envvar="ILLUME_ADMIN_TOKEN", required=True, help="The backend's admin token.")
@click.option("--model", required=True, help="Base model directory.")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), help="Adapter directory (none: base only).")
@click.option("--version", help="Model version name (default: the adapter's).")
def reload(backend_url, admin_token, model, adapter, version):
    """Make the ML backend serve another adapter (atomic swap; the old one serves until then)."""
    from connector.backend_client import reload_backend

    status = reload_backend(backend_url, admin_token, model, adapter, version)
    click.echo(f"backend serves {status.get('serving_version')!r}")


@main.command()
@server_options
@project_option
@click.option("--backend-url", envvar="ILLUME_BACKEND_URL", help="Also report this ML backend's health.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(url, api_key, project, backend_url, as_json):
    """Project counts (tasks, completed, by model version), acceptance rate and backend health."""
    from connector.status import project_status

    client = _client(url, api_key)
    report = project_status(client, _project(client, project), backend_url)
    if as_json:
        click.echo(json.dumps(report, indent=1, sort_keys=True))
        return
    for key, value in report.items():
        click.echo(f"{key}: {value}")


@main.command()
@server_options
@project_option
@click.option("--items", required=True, type=click.Path(exists=True, path_type=Path),
              help="Items that receive feedback each round (any format `import` reads).")
@click.option("--eval-items", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Held-out items (JSONL of Item): metrics per round and the promotion gate.")
@click.option("--base-model", required=True, help="Base model directory (or id available locally).")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where exports, training runs and the loop's state go (resumes from it).")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--simulate/--wait-for-people", default=True, show_default=True,
              help="Simulated critic annotates, or wait until people completed each round in Label Studio.")
@crowd_options
@click.option("--min-agreement", type=click.IntRange(min=1), help="Annotators who must tick a candidate (default: majority).")
@click.option("--local-files-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              envvar="LOCAL_FILES_DOCUMENT_ROOT", show_envvar=True,
              help="Label Studio's local-files root as this machine sees it (for local image files).")
@click.option("--backend-url", envvar="ILLUME_BACKEND_URL", help="ML backend to reload after each promotion.")
@click.option("--admin-token", envvar="ILLUME_ADMIN_TOKEN", help="The backend's admin token.")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Training processes (>1 uses the deepspeed launcher).")
@gate_options
@click.option("--train-arg", "train_args", multiple=True, help="Extra argument for `python -m training` (repeatable).")
def loop(url, api_key, project, items, eval_items, base_model, run_dir, rounds, simulate, annotators, error_rate,
         critic, threshold, min_agreement, local_files_root, backend_url, admin_token, processes, gate_metric, tolerance,
         max_accuracy_drop, eval_batch_size, train_args, seed):
    """Run N rounds of predict -> annotate -> export -> train -> reload; resumable.

    Each round imports the items as new tasks (fresh candidates from the newest model),
    so earlier rounds' annotations keep the candidates they judged. Interrupt it at any
    time: run the same command again and it continues from the last finished step.
    """
    from connector.loop import Loop, LoopConfig, summary_table

    client = _client(url, api_key)
    config = LoopConfig(project=_project(client, project), items=items, run_dir=run_dir, base_model=base_model,
                        rounds=rounds, eval_items=eval_items, local_files_root=local_files_root, simulate=simulate,
                        annotators=annotators, critic=critic, threshold=threshold, error_rate=error_rate, seed=seed,
                        min_agreement=min_agreement, backend_url=backend_url, admin_token=admin_token,
                        processes=processes, gate_metric=gate_metric, tolerance=tolerance,
                        max_accuracy_drop=max_accuracy_drop, eval_batch_size=eval_batch_size, train_args=train_args)
    state = Loop(client, config, say=click.echo, progress=lambda label: Progress(f"  {label}", every=10)).run()
    click.echo(summary_table(state.rounds))


@main.command()
@click.option("--run-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The loop's --run-dir (for the demo: <demo run dir>/loop).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Where index.html and the PNG plots go (default: <run-dir>/report).")
def report(run_dir, out):
    """Write an HTML report with plots: acceptance and diversity per round, held-out metrics,
    agreement, and example items with their candidates and ticks."""
    from connector.report import write_report

    click.echo(write_report(run_dir, out or run_dir / "report"))


@main.command()
@click.option("--run-dir", default="demo_run", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where data, Label Studio's database, exports, adapters and the report go (resumes from it).")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--items", "feedback_items", type=click.IntRange(min=1), default=200, show_default=True,
              help="Shapes-X items that receive feedback each round.")
@click.option("--eval-items", type=click.IntRange(min=1), default=100, show_default=True,
              help="Held-out Shapes-X items for the metrics and the promotion gate.")
@click.option("--interactive", is_flag=True, help="Wait for you to annotate in the browser instead of simulating.")
@crowd_options
def demo(run_dir, rounds, feedback_items, eval_items, interactive, annotators, critic, threshold, error_rate, seed):
    """The whole loop on this machine: Shapes-X, the demo model, a local Label Studio, the
    ML backend, simulated (or your) annotations, DeepSpeed training, reload, report.

    Every process it starts is stopped at the end. Run it again to resume an interrupted run.
    """
    from connector.demo import DemoConfig, run_demo

    run_demo(DemoConfig(run_dir=run_dir, rounds=rounds, feedback_items=feedback_items, eval_items=eval_items,
                        interactive=interactive, annotators=annotators, critic=critic, threshold=threshold,
                        error_rate=error_rate,
                        seed=seed),
             say=click.echo, progress=lambda label: Progress(f"  {label}", every=10))


if __name__ == "__main__":
    sys.exit(main())
