"""`illume-sync`: the ILLUME loop between Label Studio, the ML backend and the training job.

Each option is defined once below and reused by the commands that take it. The commands
share one Label Studio client through Click's context (`Session`), built on first use, so
commands that never talk to Label Studio never connect. Every command that prints results
takes --json (one JSON object on stdout; progress goes to stderr).

Exit codes: 0 done, 1 a problem you can fix (the message says what to do), 2 wrong usage,
3 (train, round) trained but not promoted.
"""
from __future__ import annotations

import json
import sys
from functools import cached_property
from pathlib import Path
from typing import Any

import click

from illume.critic import ACCEPT_THRESHOLD, DEFAULT_CRITIC, DEFAULT_SCORING, SCORING_HELP, SCORINGS
from connector.progress import Progress
from illume.errors import IllumeError
from illume.options import click_options, take
from illume.sampling import PRODUCT_SAMPLING, SamplingConfig
from connector.offline_sampling import OfflineJob
from connector.promotion import GateSettings
from connector.retention import Retention
from connector.round_step import TrainingSettings

EXIT_PROBLEM = 1
EXIT_NOT_PROMOTED = 3


class Commands(click.Group):
    """Turns an IllumeError (or a refusal from Label Studio's API) into its message on stderr
    and exit code 1 (no traceback)."""

    def invoke(self, ctx: click.Context):
        from label_studio_sdk.core.api_error import ApiError

        try:
            return super().invoke(ctx)
        except ApiError as exc:
            click.secho(f"error: Label Studio answered HTTP {exc.status_code}: {str(exc.body)[:300]}", fg="red", err=True)
            click.echo("  -> Check the command's inputs; Label Studio's log may say more.", err=True)
            ctx.exit(EXIT_PROBLEM)
        except IllumeError as exc:
            click.secho(f"error: {exc.what}", fg="red", err=True)
            if exc.todo:
                click.echo(f"  -> {exc.todo}", err=True)
            ctx.exit(EXIT_PROBLEM)


class Session:
    """What the options of one invocation say about Label Studio, and the client built from it."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.api_key: str | None = None
        self.project_ref: str | None = None
        self.as_json = False
        self.scoring = DEFAULT_SCORING  # --scoring

    @cached_property
    def client(self):
        from illume.labelstudio.client import connect

        return connect(self.url, self.api_key)

    @cached_property
    def project(self) -> dict:
        from connector.project import find_project

        return find_project(self.client, self.project_ref)

    def emit(self, text: str, data: dict[str, Any]) -> None:
        """The result: a line for people, or (--json) one JSON object for scripts."""
        click.echo(json.dumps(data, indent=1, sort_keys=True, default=str) if self.as_json else text)


pass_session = click.make_pass_decorator(Session, ensure=True)


def _into_session(attribute: str):
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        setattr(ctx.ensure_object(Session), attribute, value)
        return value
    return store


def _into_meta(group: str, name: str):
    """Store an option's value in the context under group/name (options that travel together)."""
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        ctx.meta.setdefault(group, {})[name] = value
        return value
    return store


def _options(*options):
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


class ErrorRates(click.ParamType):
    """--error-rate: one probability for every simulated annotator, or a comma-separated one each."""

    name = "RATE[,RATE...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (float, tuple)):
            return value
        try:
            rates = tuple(float(part) for part in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a number or a comma-separated list of numbers", param, ctx)
        if not all(0.0 <= r <= 1.0 for r in rates):
            self.fail(f"{value!r}: each rate must be between 0 and 1", param, ctx)
        return rates[0] if len(rates) == 1 else rates


def _quality_options(*names: str):
    """Annotator quality (connector.annotator_quality.QualitySettings): these fields' options."""
    from connector.annotator_quality import QualitySettings

    return click_options(QualitySettings, only=names, into=lambda name: _into_meta("quality", name))


def _quality():
    from connector.annotator_quality import QualitySettings

    return QualitySettings(**click.get_current_context().meta.get("quality", {}))


GOLD_SHARE = click.option("--gold-share", type=click.FloatRange(0, 1),
                          help="Flag this share of the tasks as gold (task meta, out of the annotators' view): the "
                               "same items in every round, chosen by a hash of the item id. Annotators meet them in "
                               "their queue like any other task; their ticks there are scored against what the "
                               "reference-based critic accepts (see `status`, `export --min-annotator-quality`).")


# -- every option, once -----------------------------------------------------------------------
URL = click.option("--url", envvar="LABEL_STUDIO_URL", show_envvar=True, expose_value=False,
                   callback=_into_session("url"), help="Label Studio address, e.g. http://localhost:8080.")
API_KEY = click.option("--api-key", envvar="LABEL_STUDIO_API_KEY", show_envvar=True, expose_value=False,
                       callback=_into_session("api_key"),
                       help="Label Studio API key: personal access token or legacy token.")
PROJECT = click.option("--project", "-p", required=True, envvar="ILLUME_PROJECT", show_envvar=True,
                       expose_value=False, callback=_into_session("project_ref"), help="Project id or exact title.")
IN_PROJECT = _options(URL, API_KEY, PROJECT)  # a command working on one project of one Label Studio
JSON = click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_into_session("as_json"),
                    help="Print the result as one JSON object.")
BACKEND_URL = click.option("--backend-url", envvar="ILLUME_BACKEND_URL", show_envvar=True,
                           help="The ML backend's address (reloaded on promotion).")
ADMIN_TOKEN = click.option("--admin-token", envvar="ILLUME_ADMIN_TOKEN", show_envvar=True,
                           help="The backend's admin token (for reloads).")
BASE_MODEL = click.option("--base-model", required=True, help="Base model directory (or id available locally).")
EVAL_ITEMS = click.option("--eval-items", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                          help="Held-out items (JSONL of Item): metrics and the promotion gate.")
SERVING_ADAPTER = click.option("--serving-adapter", type=click.Path(exists=True, file_okay=False),
                               help="Adapter the backend serves now (default: the base model alone).")
MIN_AGREEMENT = click.option("--min-agreement", type=click.IntRange(min=1),
                             help="Accept a candidate when at least K annotators ticked it (default: strict majority).")
MIN_ANNOTATIONS = click.option("--min-annotations", type=click.IntRange(min=1),
                               help="A task is complete (for status, export and rounds) with this many annotations, "
                                    "one per person (default: the project's overlap); tasks with fewer wait.")
LOCAL_FILES_ROOT = click.option("--local-files-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
                                envvar="LOCAL_FILES_DOCUMENT_ROOT", show_envvar=True,
                                help="Label Studio's local-files root as this machine sees it (for local images).")
TRAIN_ARGS = click.option("--train-arg", "train_args", multiple=True,
                          help="Extra argument for `python -m training` (repeatable).")
CROWD = _options(
    click.option("--annotators", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Simulated annotators per task (each a Label Studio user)."),
    click.option("--critic", default=DEFAULT_CRITIC, show_default=True,
                 help="Who ticks: rouge-l (the method's), scene (Shapes-X: true of the item's scene and supporting "
                      "the answer), scene+rouge-l (both), auto (scene where the item has a scene, else rouge-l), "
                      "or module:Class (a subclass of illume.critic.Critic)."),
    click.option("--threshold", type=click.FloatRange(0, 1),
                 help=f"The critic's acceptance threshold (default: its own; {ACCEPT_THRESHOLD} ROUGE-L for rouge-l)."),
    click.option("--error-rate", type=ErrorRates(), default="0", show_default=True,
                 help="Probability that a simulated annotator flips a decision; one per annotator as a "
                      "comma-separated list (e.g. 0.05,0.05,0.05,0.05,0.5 with --annotators 5)."),
    click.option("--per-task", type=click.IntRange(min=1),
                 help="Each task is judged by this many of the --annotators, drawn per task (default: all)."),
    click.option("--seed", type=int, default=0, show_default=True))
GATE = _options(click_options(GateSettings, skip=("against_base",)),  # and --against-base, kept for _gate
                click_options(GateSettings, only=("against_base",), into=lambda name: _into_meta("gate", name)))
SCORING = click.option("--scoring", type=click.Choice(SCORINGS), default=DEFAULT_SCORING, show_default=True,
                       expose_value=False, callback=_into_session("scoring"), help=SCORING_HELP[0].upper() + SCORING_HELP[1:] + ".")
EXPORT_IMAGES = _options(
    click.option("--allow-image-host", "allow_hosts", multiple=True,
                 help="Also copy images from this host[:port] (repeatable; default: only Label Studio's own)."),
    click.option("--allow-image-root", "allow_roots", multiple=True,
                 type=click.Path(exists=True, file_okay=False, path_type=Path),
                 help="Also copy images that are local files under this folder (repeatable)."),
    click.option("--method", type=click.Choice(["snapshot", "sync"]), default="snapshot", show_default=True,
                 help="How tasks are read: an export snapshot (resumable; any size), or Label Studio's "
                      "synchronous export (one request; times out on large projects)."))


def _gate(gate_metric, tolerance, max_accuracy_drop, eval_batch_size):
    return GateSettings(gate_metric, tolerance, max_accuracy_drop, eval_batch_size,
                        **click.get_current_context().meta.get("gate", {}))  # GATE's --against-base


def _retention_options(*names: str):
    """Issue 22's answer retention, as --flags (these Retention fields; none named: all)."""
    return click_options(Retention, only=names, into=lambda name: _into_meta("retention", name))


def _retention():
    return Retention(**click.get_current_context().meta.get("retention", {}))


RETENTION = _retention_options()
ANSWER_POOL = _options(
    _retention_options("answer_pool_ratio"),
    click.option("--held-out-items", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="Held-out items (JSONL of Item) whose item ids never get an answer-only row."))


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
      illume-sync round --project vqa --run-dir runs/vqa --base-model MODEL --backend-url ...
      (what Label Studio's "Start training" runs: export what is new, train, gate, reload)

    Label Studio is given by --url/--api-key or LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY.
    Exit codes: 0 done, 1 a problem to fix (the message says what to do), 2 wrong usage,
    3 trained but not promoted.
    """


@main.command()
@URL
@API_KEY
@click.option("--project", "-p", "title", required=True, help="Project title (reused when it exists).")
@click.option("--label-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labeling config XML (default: the shipped illume/label_config/illume_rationales.xml).")
@click.option("--overlap", type=click.IntRange(min=1), default=1, show_default=True,
              help="Annotators per task (crowd-sourcing; export then votes by majority).")
@click.option("--backend-url", help="ML backend address as Label Studio reaches it, e.g. http://backend:9090.")
@click.option("--backend-title", default="illume", show_default=True, help="ML backend name in Label Studio.")
@click.option("--backend-user", help="HTTP Basic user Label Studio sends to the backend.")
@click.option("--backend-password", envvar="ILLUME_BACKEND_PASSWORD", help="HTTP Basic password for the backend.")
@click.option("--instructions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Instructions (HTML) shown before labeling (default: the instructions.html beside the "
                   "labeling config, illume/label_config/instructions.html for the shipped one).")
@GOLD_SHARE
@JSON
@pass_session
def init(session, title, label_config, overlap, backend_url, backend_title, backend_user, backend_password,
         instructions, gold_share):
    """Create the project (or reuse the one with this title) and connect the ML backend.

    Tasks are offered lowest model score first (Label Studio's uncertainty sampling), so
    annotators see the items the model is least sure of: the project's model version follows
    the version the backend serves (set here, and by `predict` once predictions of it exist).
    The labeling config may name its controls and fields freely; one lacking what the method
    needs is refused here. The project's instructions (shown before labeling) come from
    --instructions or the instructions.html beside the labeling config. Safe to run again.

    --gold-share S flags that share of the tasks now in the project as gold (and unflags the
    rest); the gold tasks record S, and later imports (`import`, each round of `loop`) flag the
    same share of their tasks. On a project without tasks yet, pass --gold-share to `import`.
    """
    from connector.project import init_project, read_instructions, read_label_config

    auth = (backend_user, backend_password or "") if backend_user else None
    result = init_project(session.client, title, read_label_config(label_config), overlap, backend_url,
                          backend_title, auth, instructions=read_instructions(instructions, label_config))
    verb = "created" if result.created else "reused"
    gold = None
    if gold_share is not None:
        from connector.gold import mark_gold_tasks

        gold = mark_gold_tasks(session.client, result.project["id"], gold_share)
    session.emit(f"{verb} project {result.project['id']} {title!r} (overlap {overlap}"
                 + (f", backend {backend_url} serving model version {result.model_version!r})" if backend_url else ")")
                 + (f"; {gold.gold} of {gold.tasks} tasks are gold ({gold.changed} flags changed)"
                    + ("; no tasks yet: pass --gold-share to `import`" if not gold.tasks else "") if gold else ""),
                 {"project": result.project["id"], "created": result.created, "model_version": result.model_version,
                  **({"gold": vars(gold)} if gold else {})})


@main.command(name="import")
@IN_PROJECT
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@LOCAL_FILES_ROOT
@click.option("--limit", type=click.IntRange(min=1), help="Import at most this many items.")
@click.option("--round", "round_", type=click.IntRange(min=1), default=1, show_default=True,
              help="Labeling round: each round of the loop gets its own tasks (fresh candidates).")
@_options(click.option("--gold-share", type=click.FloatRange(0, 1),
                       help="Flag this share of the imported tasks as gold (as `init --gold-share`; default: the "
                            "share the project's gold tasks record, else none)."))
@JSON
@pass_session
def import_(session, source, local_files_root, limit, round_, gold_share):
    """Import items (VQA-X either layout, JSONL, CSV or an image folder with a sidecar file).

    Items already in the project (same item id, same round) are skipped, so re-running adds
    only new ones. Reference explanations are stored out of the annotators' view.
    """
    from connector.importing import ImagePlacer, import_items, read_items
    from connector.project import require_schema

    found = session.project
    schema = require_schema(found)
    items = list(read_items(source))[:limit]
    base = source if source.is_dir() else source.parent
    progress = Progress("imported", len(items), unit="item")
    placer = ImagePlacer(session.client, found["id"], local_files_root, base)
    result = import_items(session.client, found["id"], items, placer, progress, round_, schema, gold_share)
    progress.end()
    session.emit(f"imported {result.imported} items, skipped {result.skipped} already in project {found['id']}"
                 + (f"; {result.gold} new tasks are gold (share {result.gold_share})" if result.gold_share else "")
                 + (f"; removed {result.copies_removed} unjudged copies a batch sent again had created"
                    if result.copies_removed else ""),
                 {"project": found["id"], "imported": result.imported, "skipped": result.skipped,
                  "gold": result.gold, "gold_share": result.gold_share, "copies_removed": result.copies_removed})


@main.command()
@IN_PROJECT
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Tasks per prediction request (keep each well inside Label Studio's 100 s timeout); "
                   "with --offline, tasks per model batch.")
@click.option("--offline", is_flag=True,
              help="Sample here instead of through the backend: --processes processes under the deepspeed "
                   "launcher (--hostfile: several machines), same model version and pre-ticks; resumable.")
@click.option("--model", help="--offline: the base model the backend serves.")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False),
              help="--offline: the adapter the backend serves (none: base model alone).")
@click.option("--model-version", "version", help="--offline: the served version name, when the backend was given --model-version.")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="--offline: sampling processes on this machine (one per GPU).")
@click.option("--hostfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="--offline: the deepspeed hostfile of the training job (one process per listed slot).")
@click_options(OfflineJob, only=("preselect",))
@click_options(SamplingConfig, defaults=PRODUCT_SAMPLING)
@JSON
@pass_session
def predict(session, batch_size, offline, model, adapter, version, processes, hostfile, preselect, **sampling):
    """Have the ML backend predict every task lacking a prediction of the current model version.

    With --offline, candidates are sampled here with --preselect and the sampling options, which
    read the backend's environment variables, so they match the served ones in one deployment.
    """
    from connector.predicting import predict_missing

    if offline:
        from connector.offline_sampling import run_offline

        if not model:
            raise IllumeError("--offline needs --model", "Pass the base model directory the backend serves.")
        job = OfflineJob(url=session.client.url, project=session.project["id"], model=model, adapter=adapter,
                         version=version, preselect=preselect, batch_size=batch_size,
                         sampling=take(SamplingConfig, sampling))
        with Progress("sampled") as progress:
            result = run_offline(session.client, session.project, job, processes, hostfile,
                                 echo=lambda line: click.echo(line, err=True), progress=progress)
        session.emit(f"{result.predicted} of {result.requested} tasks got a prediction of version {result.version!r} "
                     f"({processes if not hostfile else 'hostfile'} processes, {result.seconds:.0f} s)",
                     {"requested": result.requested, "predicted": result.predicted, "version": result.version,
                      "seconds": result.seconds})
        if result.predicted < result.requested:
            raise IllumeError(f"{result.requested - result.predicted} tasks still lack a prediction",
                              "Run the same command again (done tasks are skipped); the log above says why.")
        return
    progress = Progress("predicted")
    result = predict_missing(session.client, session.project, batch_size, progress)
    progress.end()
    session.emit(f"{result.predicted} of {result.requested} tasks got a prediction of version {result.version!r}",
                 {"requested": result.requested, "predicted": result.predicted, "version": result.version})
    if result.predicted < result.requested:
        raise IllumeError(f"{result.requested - result.predicted} tasks still lack a prediction",
                          "Check the ML backend's log (timeouts: lower --batch-size).")


@main.command()
@IN_PROJECT
@click.option("--task", "task_ids", type=click.IntRange(min=1), multiple=True, required=True,
              help="A task id (the Data Manager's ID column); repeat for more tasks.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Tasks per request to the ML backend.")
@JSON
@pass_session
def resample(session, task_ids, batch_size):
    """Have the ML backend sample new candidates for these tasks, keeping what they hold.

    New texts are appended under new aliases; every option a task had keeps its place and
    wording, so existing annotations keep meaning what they meant. Texts already offered are not
    added again.
    """
    from connector.resampling import resample as resample_tasks

    progress = Progress("resampled")
    result = resample_tasks(session.client, session.project, list(task_ids), batch_size, progress)
    progress.end()
    session.emit(f"{len(result.tasks)} tasks asked for new candidates of version {result.version!r}: {result.added} "
                 f"new options appended, no existing option changed"
                 + (f"; nothing new for task(s) {', '.join(map(str, result.nothing_new))} (run again)"
                    if result.nothing_new else ""),
                 {"version": result.version, "added": result.added, "nothing_new": result.nothing_new,
                  "unanswered": result.unanswered,
                  "tasks": [{"task": t.task, "kept": t.kept, "added": t.added} for t in result.tasks]})
    if result.unanswered:
        raise IllumeError(f"the ML backend wrote no candidates for task(s) {', '.join(map(str, result.unanswered))}",
                          "Check the ML backend's log, then run the same command again for those tasks.")


@main.command()
@IN_PROJECT
@click.option("--simulate", is_flag=True, required=True,
              help="Annotate with the simulated critic (the only mode; people annotate in Label Studio).")
@CROWD
@SCORING
@JSON
@pass_session
def annotate(session, simulate, annotators, critic, threshold, error_rate, seed, per_task):
    """Tick candidates like the method's simulated critic and submit real annotations."""
    from connector.simulate import simulate as run
    from illume.critic import make_critic

    judge = make_critic(critic, threshold, session.scoring)
    progress = Progress("annotated", session.project.get("task_number"))
    result = run(session.client, session.project, annotators, judge, error_rate, seed, progress, per_task)
    progress.end()
    session.emit(f"submitted {result.annotations} annotations ticking {result.ticked} of {result.shown} candidates"
                 + (f"; {result.skipped_without_candidates} tasks have no candidates yet (run predict)"
                    if result.skipped_without_candidates else ""), vars(result))


def _export_summary(manifest: dict, out: Path) -> str:
    counts, agreement = manifest["counts"], manifest["agreement"]
    refused = [r for key in ("refused_images", "refused_texts", "refused_tasks") for r in manifest.get(key) or []]
    return (f"exported {counts['completed']} completed tasks to {out}: {counts['rationale_rows']} rationale rows "
            f"({counts['new_rationale_rows']} new), {counts['answer_rows']} answer-only rows, {counts['pairs']} "
            f"preference pairs; acceptance rate {manifest['acceptance']['rate']}; "
            f"{manifest['preticks']['accepted_preticked_unchanged']} of {manifest['preticks']['accepted']} accepted "
            f"were pre-ticks left standing; {manifest['reconciliation']['none_with_ticks']} annotations said "
            "'None' with ticks (None wins)"
            + (f"; Fleiss' kappa {agreement['fleiss_kappa']}" if agreement["fleiss_kappa"] is not None else "")
            + (f", Cohen's kappa {agreement['cohen_kappa']}" if agreement["cohen_kappa"] is not None else "")
            + "".join(f"\nleft out task {r['task']}" + (f" (item {r['item_id']})" if r.get("item_id") else "")
                      + f": {r['reason']} -> {r['todo']}"
                      for r in refused))


def _policy(client, allow_hosts, allow_roots):
    from connector.export_project import export_policy

    return export_policy(client, tuple(allow_hosts), tuple(allow_roots))


@main.command()
@IN_PROJECT
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Export directory (replaced atomically when it exists).")
@click.option("--previous", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An earlier export to merge: its rows and pairs carry over, without duplicates.")
@MIN_AGREEMENT
@MIN_ANNOTATIONS
@click.option("--round", "round_", type=click.IntRange(min=1),
              help="Export only this labeling round's tasks (also the rows' iteration; default: previous + 1).")
@EXPORT_IMAGES
@ANSWER_POOL
@_quality_options("min_quality", "critic", "min_decisions")
@JSON
@pass_session
def export(session, out, previous, min_agreement, min_annotations, round_, allow_hosts, allow_roots, method,
           held_out_items):
    """Turn completed tasks into training data: rows.jsonl, preferences.jsonl, unticked.jsonl,
    feedback.jsonl, manifest.json and images/.

    Rationale rows for every accepted candidate and written rationale; answer-only rows drawn
    from all the project's items without one (--answer-pool-ratio x the rationale rows, never
    --held-out-items; 0: only annotated items); preference pairs (accepted vs not) in TRL's layout. Cancelled
    annotations are skipped. Images are copied through the guarded image loader: a task
    whose image is on another host or a local path is left out and reported, unless you
    allow that host or folder. Writes are atomic and repeatable.

    Annotator quality: each annotator's agreement with gold tasks (their ticks against what the
    --gold-critic accepts given the references) and with the others' majority goes into the
    manifest ("annotator_quality"). --min-annotator-quality Q leaves out the annotations of those
    whose quality is below Q (gold agreement, else majority agreement; people with fewer than
    --min-quality-decisions decisions are kept); a task they helped complete is judged by the rest.
    """
    from connector.export_project import export_project, held_out_ids

    pool = _retention().answer_pool()
    # Every task is read when answer-only rows are drawn from all items; else the annotated ones.
    progress = Progress("exported", session.project.get("task_number" if pool else "num_tasks_with_annotations"))
    manifest = export_project(session.client, session.project, out, min_agreement, previous, progress, round_,
                              policy=_policy(session.client, allow_hosts, allow_roots), method=method,
                              min_annotations=min_annotations, answer_pool=pool,
                              held_out=held_out_ids(held_out_items), quality=_quality())
    progress.end()
    left_out = manifest["annotator_quality"]
    session.emit(_export_summary(manifest, out)
                 + (f"\nleft out {left_out['excluded_annotations']} annotations of {len(left_out['excluded_annotators'])} "
                    f"annotators below quality {left_out['threshold']} (ids {left_out['excluded_annotators']})"
                    if left_out["threshold"] is not None else ""), manifest)


@main.command(name="export-trl")
@click.option("--export", "export_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Export directory written by `illume-sync export`.")
@click.option("--push-to-hub", "repo", metavar="OWNER/NAME",
              help="Also upload the layouts (sft, unpaired, preference configs, images embedded) to this "
                   "Hugging Face dataset repository (private; token from HF_TOKEN). Off by default.")
@click.option("--dry-run", is_flag=True, help="With --push-to-hub: say what would be uploaded, upload nothing.")
@JSON
@pass_session
def export_trl(session, export_dir, repo, dry_run):
    """Write the export in TRL's other layouts beside preferences.jsonl: sft.jsonl (prompt/completion,
    SFTTrainer) and unpaired.jsonl (prompt/completion/label, KTOTrainer: accepted rationales true,
    candidates nobody ticked false). Each loads with datasets.load_dataset("json", ...)."""
    from dataclasses import asdict

    from connector.export_trl import push_to_hub, write_trl_layouts

    counts = write_trl_layouts(export_dir)
    summary = f"wrote {counts['sft']} SFT rows and {counts['unpaired']} unpaired rows into {export_dir}"
    result: dict[str, Any] = {"export": str(export_dir), "rows": counts}
    if repo:
        plan = push_to_hub(export_dir, repo, dry_run=dry_run)
        result["hub"] = asdict(plan)
        configs = ", ".join(f"{name} ({rows} rows)" for name, rows in plan.configs.items())
        summary += (f"\n{'would push' if dry_run else 'pushed'} to https://huggingface.co/datasets/{repo}: "
                    f"{configs}; {plan.images} images")
    session.emit(summary, result)


# What every path that trains takes (train, round, loop): the gate, the training settings, the user's
# own training arguments (connector.round_step.TrainingSettings; retention options come per command).
ROUND_STEP = _options(GATE, click_options(TrainingSettings), TRAIN_ARGS)


def _training(params: dict[str, Any]) -> TrainingSettings:
    """The round step's settings from a command's parameters (ROUND_STEP's are popped out of them)."""
    gate = _gate(*(params.pop(name) for name in ("gate_metric", "tolerance", "max_accuracy_drop", "eval_batch_size")))
    return take(TrainingSettings, params, train_args=tuple(params.pop("train_args")), gate=gate, retention=_retention())


@main.command()
@click.option("--export", "export_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Export directory written by `illume-sync export`.")
@BASE_MODEL
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@EVAL_ITEMS
@SERVING_ADAPTER
@click.option("--model-version", "version", help="Model version name for the new adapter (default: the run directory's name).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@BACKEND_URL
@ADMIN_TOKEN
@ROUND_STEP
@_retention_options("answer_in_rationale", "warm_start", "epochs", "select_epoch")
@JSON
@pass_session
@click.pass_context
def train(ctx, session, export_dir, base_model, out, eval_items, serving_adapter, version, resume, backend_url,
          admin_token, **params):
    """Train an adapter on an export, evaluate it, and promote it only if it is not worse.

    The round step's training and gate (connector.round_step) on an export you give it: the new
    adapter is evaluated once (by the training job when it chooses the epoch on --eval-items).
    Promotion reloads the backend with the new adapter and version (with --backend-url);
    then run `illume-sync predict` for the open tasks. Exit code 3: trained, not promoted.
    """
    from dataclasses import asdict

    from connector.promotion import Backend, promote, reference_metrics
    from connector.round_step import train_adapter
    from connector.training_job import accuracy_floor, read_eval_items

    backend = Backend.from_options(backend_url, admin_token)  # refused before hours of training, not after
    training = _training(params)
    items = read_eval_items(eval_items) if eval_items else []
    version = version or out.name
    # measured first: the epoch is chosen within the gate's accuracy bound
    serving, baseline = reference_metrics(base_model, serving_adapter, items, training.gate) if items else (None, None)
    adapter, measured = train_adapter(export_dir, base_model, out, version, training, eval_items=eval_items,
                                      init_adapter=serving_adapter, resume=resume,
                                      min_accuracy=accuracy_floor(training.gate.max_accuracy_drop, baseline, serving),
                                      echo=lambda line: click.echo(line, err=True))
    say = (lambda line: click.echo(line, err=True)) if session.as_json else click.echo
    say(f"trained adapter {adapter}")
    result = promote(adapter, version, base_model, out, eval_items=items, metrics=measured,
                     serving_adapter=serving_adapter, serving_metrics=serving, baseline_metrics=baseline,
                     settings=training.gate, backend=backend,
                     retention=training.retention.record(adapter, export_dir), say=say)
    if session.as_json:
        session.emit("", asdict(result))
    if not result.promoted:
        ctx.exit(EXIT_NOT_PROMOTED)


@main.command(name="round")
@IN_PROJECT
@click.option("--run-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where this project's rounds go (exports, adapters, rounds.json); the same for every round.")
@BASE_MODEL
@EVAL_ITEMS
@SERVING_ADAPTER
@MIN_AGREEMENT
@MIN_ANNOTATIONS
@BACKEND_URL
@ADMIN_TOKEN
@ROUND_STEP
@RETENTION
@EXPORT_IMAGES
@_quality_options("min_quality", "critic", "min_decisions")
@JSON
@pass_session
@click.pass_context
def round_(ctx, session, run_dir, base_model, eval_items, serving_adapter, min_agreement, min_annotations,
           backend_url, admin_token, allow_hosts, allow_roots, method, **params):
    """One training round on what annotators finished: what Label Studio's "Start training" runs.

    Exports the completed tasks no earlier round trained on (merged with the previous round's
    rows), trains an adapter, gates it on --eval-items and, when promoted, reloads the backend.
    Nothing is imported. A round interrupted after its export trains on that export when run
    again. `illume-sync report --run-dir` shows the rounds. Exit code 3: trained, not promoted.
    """
    from connector.labeling_round import RoundConfig, run_round
    from connector.promotion import Backend

    config = RoundConfig(project=session.project, run_dir=run_dir, base_model=base_model, eval_items=eval_items,
                         min_agreement=min_agreement, min_annotations=min_annotations, serving_adapter=serving_adapter,
                         backend=Backend.from_options(backend_url, admin_token), training=_training(params),
                         policy=_policy(session.client, allow_hosts, allow_roots), method=method,
                         quality=_quality())
    say = (lambda line: click.echo(line, err=True)) if session.as_json else click.echo
    record = run_round(session.client, config, say=say, progress=Progress("  exported"))
    served = record.get("serving_version")
    session.emit(f"round {record['round']}: {len(record['tasks'])} tasks, adapter {record['adapter']} "
                 + ("promoted" + (f", backend serves {served!r}" if served else "")
                    if record["promoted"] else f"not promoted ({record['gate']})"), record)
    if not record["promoted"]:
        ctx.exit(EXIT_NOT_PROMOTED)


@main.command()
@click.option("--backend-url", envvar="ILLUME_BACKEND_URL", required=True, help="ML backend address.")
@click.option("--admin-token", envvar="ILLUME_ADMIN_TOKEN", required=True, help="The backend's admin token.")
@click.option("--model", help="Base model directory (required without --run).")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), help="Adapter directory (none: base only).")
@click.option("--model-version", "version", help="Model version name (default: the adapter's).")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Finish the reload a training recorded in this run directory (pending_reload.json).")
@JSON
@pass_session
def reload(session, backend_url, admin_token, model, adapter, version, run_dir):
    """Make the ML backend serve another adapter (atomic swap; the old one serves until then)."""
    from connector.backend_client import finish_pending_reload, reload_backend

    if run_dir is not None:
        status = finish_pending_reload(run_dir, admin_token, backend_url)
    elif model:
        status = reload_backend(backend_url, admin_token, model, adapter, version)
    else:
        raise IllumeError("reload needs --model (and --adapter), or --run <run dir> to finish a recorded reload",
                          "Pass --model, or the run directory of the training whose reload failed.")
    session.emit(f"backend serves {status.get('serving_version')!r}", status)


@main.command()
@IN_PROJECT
@click.option("--backend-url", envvar="ILLUME_BACKEND_URL", show_envvar=True,
              help="Also report this ML backend's health.")
@MIN_ANNOTATIONS
@_quality_options("critic", "min_decisions")
@JSON
@pass_session
def status(session, backend_url, min_annotations):
    """Project counts (tasks, completed, by model version), acceptance rate, each annotator's
    agreement with gold tasks and with the others' majority, and backend health.

    A task is completed once it has as many annotations as the project's overlap (or
    --min-annotations); annotated tasks below that are counted apart, as skips are.
    """
    from connector.annotator_quality import annotator_table, format_table
    from connector.status import project_status

    report = project_status(session.client, session.project, backend_url, min_annotations, _quality())
    lines = [f"{key}: {value}" for key, value in report.items() if key != "annotator_quality"]
    quality = report["annotator_quality"]
    lines.append(f"annotators ({quality['gold_tasks']} gold tasks judged; quality = gold agreement, else majority "
                 f"agreement, from {quality['min_decisions']} decisions):\n{format_table(annotator_table(quality))}")
    session.emit("\n".join(lines), report)


@main.command()
@IN_PROJECT
@click.option("--items", required=True, type=click.Path(exists=True, path_type=Path),
              help="Items that receive feedback each round (any format `import` reads).")
@EVAL_ITEMS
@BASE_MODEL
@click.option("--run-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where exports, training runs and the loop's state go (resumes from it).")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--simulate/--wait-for-people", default=True, show_default=True,
              help="Simulated critic annotates, or wait until people finished each round in Label Studio "
                   "(each task annotated, or skipped by the people it was offered to).")
@click.option("--wait-hours", type=click.FloatRange(min=0),
              help="--wait-for-people: after this long a round goes on with the tasks that are complete "
                   "(default: a day).")
@CROWD
@MIN_AGREEMENT
@MIN_ANNOTATIONS
@LOCAL_FILES_ROOT
@BACKEND_URL
@ADMIN_TOKEN
@ROUND_STEP
@RETENTION
@_quality_options("min_quality", "critic", "min_decisions")
@SCORING
@JSON
@pass_session
def loop(session, items, eval_items, base_model, run_dir, rounds, simulate, wait_hours, annotators, error_rate, critic,
         threshold, min_agreement, min_annotations, local_files_root, backend_url, admin_token, seed, per_task, **params):
    """Run N rounds of import -> predict -> annotate -> export -> train -> reload; resumable.

    Each round imports the items as new tasks (fresh candidates from the newest model),
    so earlier rounds' annotations keep the candidates they judged; its export, training and
    promotion are the round step `round` runs too (one rounds.json, versions illume-round-<n>).
    Interrupt it at any time: run the same command again and it continues from the last
    finished step. (For rounds on what people annotated, without importing, use `round`.)
    """
    from connector.loop import Loop, LoopConfig, summary_table

    config = LoopConfig(project=session.project, items=items, run_dir=run_dir, base_model=base_model,
                        rounds=rounds, eval_items=eval_items, local_files_root=local_files_root, simulate=simulate,
                        annotators=annotators, critic=critic, threshold=threshold, error_rate=error_rate, seed=seed,
                        per_task=per_task,
                        min_agreement=min_agreement, min_annotations=min_annotations,
                        backend_url=backend_url, admin_token=admin_token, training=_training(params),
                        quality=_quality(), scoring=session.scoring, **({"wait_hours": wait_hours} if wait_hours is not None else {}))
    say = (lambda line: click.echo(line, err=True)) if session.as_json else click.echo
    rounds_done = Loop(session.client, config, say=say, progress=lambda label: Progress(f"  {label}")).run().rounds_json()
    session.emit(summary_table(rounds_done, session.scoring), {"rounds": rounds_done})


@main.command()
@click.option("--run-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The --run-dir of `loop` or `round` (for the demo: <demo run dir>/loop).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Where index.html and the PNG plots go (default: <run-dir>/report).")
@SCORING
@JSON
@pass_session
def report(session, run_dir, out):
    """Write an HTML report with plots of a run's rounds (made by `loop` or `round`): acceptance and
    diversity per round, held-out metrics, agreement, and example items with their candidates and ticks."""
    from connector.report import write_report

    page = write_report(run_dir, out or run_dir / "report", session.scoring)
    session.emit(str(page), {"report": str(page)})


@main.command()
@click.option("--run-dir", default="demo_run", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where data, Label Studio's database, exports, adapters and the report go (resumes from it).")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--items", "feedback_items", type=click.IntRange(min=1), default=200, show_default=True,
              help="Shapes-X items that receive feedback each round.")
@click.option("--eval-items", type=click.IntRange(min=1), default=100, show_default=True,
              help="Held-out Shapes-X items for the metrics and the promotion gate.")
@click.option("--interactive", is_flag=True, help="Wait for you to annotate in the browser instead of simulating.")
@CROWD
@_retention_options("warm_start", "answer_pool_ratio")
def demo(run_dir, rounds, feedback_items, eval_items, interactive, annotators, critic, threshold, error_rate, seed,
         per_task):
    """The whole loop on this machine: Shapes-X, the demo model, a local Label Studio, the
    ML backend, simulated (or your) annotations, DeepSpeed training, reload, report.

    Every process it starts is stopped at the end. Run it again to resume an interrupted run.
    """
    from connector.demo import DemoConfig, run_demo

    run_demo(DemoConfig(run_dir=run_dir, rounds=rounds, feedback_items=feedback_items, eval_items=eval_items,
                        interactive=interactive, annotators=annotators, critic=critic, threshold=threshold,
                        error_rate=error_rate, per_task=per_task, seed=seed, retention=_retention()),
             say=click.echo, progress=lambda label: Progress(f"  {label}"))


if __name__ == "__main__":
    sys.exit(main())
