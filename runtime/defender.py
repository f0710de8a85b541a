"""The lean runtime (no torch): load a bundle, defend images, classify, flag likely attacks.

Same algorithm, coefficients and random numbers as the PyTorch reference (diffdefense.reference), with the
U-Net and the classifier run by onnxruntime. A batch is cut into chunks that fit a memory budget
(runtime/chunking.py); all the R candidates of a chunk's images go through the U-Net together.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffdefense.detection_threshold import DEFAULT_DETECTION_SCORE, DETECTION_SCORES, compute_score
from diffdefense.draws import Draws, draw_chunks
from diffdefense.respace import reverse_chain, settings_timesteps
from diffdefense.runtime.backends import BackendOptions, ClosedRunner, make_runner
from diffdefense.runtime.bundle import load_bundle
from diffdefense.runtime.chunking import chunk_bounds, images_per_chunk
from diffdefense.runtime.device_loop import DeviceLoop, choose_kernels
from diffdefense.runtime.fused import load_step_ops
from diffdefense.runtime.manifest import SETTINGS_LIMITS, DetectionRecord
from diffdefense.runtime.steps import unit_to_image
from diffdefense.runtime.unet_graphs import PRECISIONS, TimestepUNet, choose_graphs
from diffdefense.runtime.validation import check_images
from diffdefense.settings import PRESETS, DefenseSettings

MAX_ITERATIONS = SETTINGS_LIMITS["iterations"]  # per call, as for a bundle's settings: L sizes the noise drawn
# Latents are N(0, I) draws, moved by Adam; the shipped presets' winners on the shipped samples stay below 25 (paper
# and default, lr 25). Far larger ones overflow the U-Net in float32 and would give NaN answers.
MAX_LATENT = 1e4


@dataclass(frozen=True)
class DefenseResult:
    """labels (B,) int; probabilities (B, 10); reconstructions (B, 1, 28, 28) in [0, 1];
    reconstruction_error (B,): mean squared error of the best candidate (with settings.refine, its fit before the
        refining pass, so not the distance of the reconstructions returned);
    detection_score (B,): the score the threshold applies to (the Defender's detection_score: 'refined_l1', the
        mean absolute difference between reconstruction and input, or 'best_mse', reconstruction_error itself);
    attack_flag (B,) bool: detection_score above the threshold (all False when no threshold is set);
    timings: seconds for 'defense', 'classify' and 'total' of this batch."""

    labels: np.ndarray
    label_names: list[str]
    probabilities: np.ndarray
    reconstructions: np.ndarray
    reconstruction_error: np.ndarray
    detection_score: np.ndarray
    attack_flag: np.ndarray
    threshold: float | None
    timings: dict[str, float]
    step_ops: str = "numpy"  # which implementation ran the elementwise steps: 'cuda', 'cpp_ext' or 'numpy'
    device_loop: bool = False  # True: the loop's buffers stayed on the GPU (IOBinding and cpp_ext's CUDA kernels)
    latents: np.ndarray | None = None  # (B, 1, 28, 28): each input's winning latent, to warm-start the next frame


@dataclass(frozen=True)
class Reconstruction:
    """images (B, 1, 28, 28) in [0, 1]; errors (B,): the best candidate's loss; latents (B, 1, 28, 28): the
    best candidate's latent after the last update."""

    images: np.ndarray
    errors: np.ndarray
    latents: np.ndarray


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Defender:
    """defender(images) -> DefenseResult, for images (B, 1, 28, 28) float in [0, 1].

    settings: a DefenseSettings, a preset name, or None for the bundle's defaults.
    threshold: detection score above which an input is flagged; None uses the bundle's, if it has one and it was
        calibrated for these settings and this score.
    detection_score: which score flags attacks ('refined_l1' or 'best_mse'; diffdefense/detection_threshold.py);
        None: the one the bundle's threshold was calibrated on ('refined_l1' when the bundle has none).
    backend: where the models and the elementwise steps run, a BackendOptions (provider, threads, fp16, step_ops,
        device_loop; its docstring says what each means). The keyword arguments of the same names build one
        instead (those left None take BackendOptions' defaults); give one or the other. The attribute backend holds
        the options; device_loop says whether the device loop runs.
    precision: 'float32', or 'int8' for the bundle's int8 U-Net graphs (static QDQ, calibrated on the defence's own
        inputs; export/quantize.py), which exist with the timestep folded in only. None: the bundle's default
        precision (its manifest's, set at export where int8's accuracy was measured to hold) on the CPU provider
        without the device loop, when unet_graphs is None or 'folded' and the bundle has graphs in it for every
        timestep the settings use; float32 otherwise. The attribute precision says which runs.
    unet_graphs: which U-Net graphs run (runtime/unet_graphs.py): 'folded' (one graph per timestep with it folded
        in; settings that use a timestep the bundle has no such graph for are refused), 'general' (the graph that
        takes t, float32 only), or 'auto' (folded where the bundle has the timestep, general elsewhere). None: 'auto'
        in float32 (both graphs compute the same function, to float rounding), 'folded' in int8 (never a silent
        change of precision), 'general' with the device loop (which binds the general graph's inputs).
    max_batch, memory_budget: how every call cuts a large batch into chunks (runtime/chunking.py): at most max_batch
        images per chunk, and chunks that fit memory_budget bytes of working memory (None: 1 GiB). A call's own
        arguments of the same names take precedence. The results never depend on them, bit for bit.

    A Defender owns its sessions (or engines): close() releases them, as does leaving a `with Defender(...)` block;
    a closed Defender refuses to run with a BackendError.
    """

    def __init__(
        self,
        bundle: str | Path,
        settings: DefenseSettings | str | None = None,
        provider: str | None = None,
        threshold: float | None = None,
        threads: int | None = None,
        step_ops: str | None = None,
        fp16: bool | None = None,
        device_loop: bool | None = None,
        *,
        backend: BackendOptions | None = None,
        precision: str | None = None,
        unet_graphs: str | None = None,
        max_batch: int | None = None,
        memory_budget: int | None = None,
        detection_score: str | None = None,
    ) -> None:
        self.closed = False
        keywords = {"provider": provider, "threads": threads, "fp16": fp16, "step_ops": step_ops}
        self.backend = _backend_options(backend, **keywords, device_loop=device_loop)
        kernels = choose_kernels(self.backend.provider, self.backend.device_loop, self.backend.step_ops)
        self.steps = load_step_ops(self.backend.step_ops)
        self.bundle = load_bundle(bundle)
        manifest = self.bundle.manifest
        if settings is None:
            settings = manifest.default_settings
        elif isinstance(settings, str):
            if settings not in PRESETS:
                raise ValueError(f"Expected a preset in {sorted(PRESETS)}, but got {settings!r}.")
            settings = PRESETS[settings]
        if settings.gradient == "full" and "unet_vjp" not in manifest.roles:
            raise ValueError(
                "The full-gradient mode needs the U-Net's vector-Jacobian graph, which this bundle does not "
                "carry; export it again with tools/export.py, or use gradient='straight-through'."
            )
        settings.check_trained_timesteps(manifest.unet_trained_timesteps, "This bundle's U-Net")
        self.settings = settings
        self.schedule = schedule = manifest.schedule()
        self.chain = reverse_chain(schedule, settings.start_step, settings.num_steps, settings.eta)
        self.refine_chain = reverse_chain(schedule, settings.refine_start, settings.num_steps, settings.eta)
        self.timesteps = settings_timesteps(settings)  # every index the U-Net is called at, the refining pass's too
        self.gain = float(np.prod(self.chain.a))
        self.coefficients = _coefficients(self.chain)
        self.refine_coefficients = _coefficients(self.refine_chain)
        self.image_shape = manifest.image_shape
        images_per_chunk(settings, self.image_shape, max_batch, memory_budget)  # refuses bad values now
        self.max_batch, self.memory_budget = max_batch, memory_budget
        self.label_names = list(manifest.labels)
        if threshold is not None and not (
            isinstance(threshold, numbers.Real) and not isinstance(threshold, bool) and 0.0 <= threshold < math.inf
        ):  # NaN would never flag, infinity never could
            raise ValueError(f"Expected threshold to be None or a finite number >= 0, but got {threshold!r}.")
        if precision is None:
            precision = _default_precision(manifest, self.timesteps, self.backend.provider, kernels, unet_graphs)
        self.precision = precision
        self.unet_graphs = _unet_graphs(unet_graphs, precision, device_loop=bool(kernels))
        self.detection_score = _detection_score(detection_score, manifest.detection)
        self.threshold = (
            float(threshold)
            if threshold is not None
            else _bundle_threshold(manifest.detection, settings, self.detection_score, precision)
        )
        self.unet = self._unet_runner(manifest)
        self.classifier = self._runner("classifier")
        self.unet_vjp = self._runner("unet_vjp") if settings.gradient == "full" else None
        self.device_loop = DeviceLoop(self.unet, self.unet_vjp, kernels) if kernels else None

    def _runner(self, role: str):
        """A role's graph from the bytes load_bundle verified, never re-read from disk (the file could have been
        swapped since); the path only names it in messages. The U-Net's graphs shard their calls as the backend
        says; the classifier, called once per batch, runs in one session."""
        o = self.backend
        shards = 1 if role == "classifier" else o.shards
        return make_runner(
            self.bundle.path(role),
            o.provider,
            o.threads,
            o.fp16,
            data=self.bundle.graph(role),
            spin=o.spin,
            shards=shards,
        )

    def _unet_runner(self, manifest):
        """The general graph's runner with the device loop; otherwise a TimestepUNet over the folded graphs chosen for
        the settings' timesteps (the chain's and its refining pass's), with the general graph only where one has
        none."""
        if self.unet_graphs == "general" and self.precision == "float32":
            return self._runner("unet")
        files = choose_graphs(manifest.folded_graphs(self.precision), self.timesteps, self.unet_graphs, self.precision)
        o = self.backend
        folded = {
            t: make_runner(
                self.bundle.root / name,
                o.provider,
                o.threads,
                o.fp16,
                data=self.bundle.file(name),
                spin=o.spin,
                shards=o.shards,
            )
            for t, name in files.items()
        }
        missing = set(self.timesteps) - set(folded)
        return TimestepUNet(folded, self._runner("unet") if missing else None)

    def close(self) -> None:
        """Release every runner's session or engine; a second call does nothing. The runners are replaced by
        stand-ins whose run raises a BackendError saying that this Defender was closed."""
        if self.closed:
            return
        self.closed = True
        self.device_loop = None  # it runs on the runners' sessions
        for role in ("unet", "unet_vjp", "classifier"):
            runner = getattr(self, role)
            if runner is not None:
                runner.close()
                message = f"This Defender was closed, so it cannot run its {role} ({runner.name}); make a new Defender."
                setattr(self, role, ClosedRunner(runner.name, message))

    def __enter__(self) -> Defender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def step_ops_name(self) -> str:
        """Which implementation runs the elementwise steps: 'cuda' (the device loop), 'cpp_ext' or 'numpy'."""
        return self.device_loop.name if self.device_loop is not None else self.steps.name

    def start_latents(self, images: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """The candidates' starting latents (B, R, 1, 28, 28) from their drawn noise: the noise itself ('noise'), or a
        canvas diffused to the chain's start level, c0 (2 x - 1) + c1 n, with x the input ('input') or all
        background, 0 ('blank')."""
        if self.settings.latent_init == "noise":
            return noise
        canvas = images[:, None] if self.settings.latent_init == "input" else 0.0
        return self.schedule.q_sample(2.0 * canvas - 1.0, self.settings.start_step, noise)

    def reconstruct(
        self,
        images: np.ndarray,
        initial_latents: np.ndarray | None = None,
        iterations: int | None = None,
        *,
        max_batch: int | None = None,
        memory_budget: int | None = None,
    ) -> Reconstruction:
        """Algorithm 1 on checked images, in chunks that fit a memory budget (runtime/chunking.py), one after the
        other, each with its share of the whole call's random draws: the same results, bit for bit, however the
        call is cut.

        initial_latents (B, K, 1, 28, 28), K <= R: start the first K candidates there instead of at the drawn
        ones (a warm start from the previous frame); the other R - K stay fresh.
        iterations: L for this call instead of the settings' (a warm start needs fewer).
        max_batch: at most this many images per chunk (None: as many as the budget allows).
        memory_budget: bytes of working memory a chunk may take (None: chunking.DEFAULT_MEMORY_BUDGET, 1 GiB), at
            a measured cost per candidate (chunking.candidate_bytes); at least one image per chunk whatever it is.
        """
        if iterations is not None and (not isinstance(iterations, int) or not 1 <= iterations <= MAX_ITERATIONS):
            raise ValueError(f"Expected iterations to be an integer in [1, {MAX_ITERATIONS}], but got {iterations!r}.")
        batch = images.shape[0]
        if initial_latents is not None:  # before drawing anything
            initial_latents = self._check_latents(initial_latents, batch)
        s = self.settings if iterations is None else self.settings.with_(iterations=iterations)
        max_batch, memory_budget = self._chunking(max_batch, memory_budget)
        bounds = chunk_bounds(batch, images_per_chunk(s, self.image_shape, max_batch, memory_budget))
        parts = [
            self._reconstruct_chunk(
                images[start:stop], None if initial_latents is None else initial_latents[start:stop], draws, s
            )
            for (start, stop), draws in zip(bounds, draw_chunks(s, batch, bounds, self.image_shape), strict=True)
        ]
        if len(parts) == 1:
            return parts[0]
        return Reconstruction(
            np.concatenate([part.images for part in parts]),
            np.concatenate([part.errors for part in parts]),
            np.concatenate([part.latents for part in parts]),
        )

    def _reconstruct_chunk(
        self, images: np.ndarray, initial_latents: np.ndarray | None, draws: Draws, s: DefenseSettings
    ) -> Reconstruction:
        """Algorithm 1 on one chunk of checked images, with the chunk's draws and checked initial latents."""
        batch = images.shape[0]
        n = batch * s.num_candidates
        target = np.repeat(images, s.num_candidates, axis=0)
        latents = self.start_latents(images, draws.latents)
        if initial_latents is not None:
            latents = latents.copy()
            latents[:, : initial_latents.shape[1]] = initial_latents
        z = np.array(latents, dtype=np.float32).reshape(n, *self.image_shape)  # a copy: Adam updates it in place
        if self.device_loop is not None:
            noise = draws.noise.reshape(len(draws.noise), s.num_steps, n, *self.image_shape)
            image, loss, z = self.device_loop.run(
                z, target, noise, self.chain.timesteps, self.coefficients, s, self.gain
            )
        else:
            image, loss, z = self._host_loop(z, target, draws, s)
        losses = loss.reshape(batch, s.num_candidates)
        best = losses.argmin(axis=1)
        pick = np.arange(batch) * s.num_candidates + best
        image = image[pick].astype(np.float32)
        if s.refine:
            image = self.refine(image, draws.refine_noise)
        return Reconstruction(image, losses[np.arange(batch), best], z[pick].copy())

    def refine(self, images: np.ndarray, refine_noise: np.ndarray) -> np.ndarray:
        """settings.refine's pass, on the host whatever the loop ran on (T* U-Net calls on B images): images
        (B, 1, 28, 28) diffused to the pass's start level with refine_noise[0], its T* steps with refine_noise[1:],
        and the output mapped by 'clip'."""
        z = self.schedule.q_sample(2.0 * images - 1.0, self.settings.refine_start, refine_noise[0]).astype(np.float32)
        timesteps = [np.full(len(images), t, dtype=np.int64) for t in self.refine_chain.timesteps]
        x, _ = self.run_chain(z, refine_noise[1:], timesteps, self.refine_coefficients)
        return unit_to_image((x + 1.0) * 0.5, "clip").astype(np.float32)

    def _host_loop(self, z, target, draws, s: DefenseSettings):
        """The L x T* loop with every array on the host: (images, losses, latents) of all candidates."""
        n = z.shape[0]
        m, v = np.zeros_like(z), np.zeros_like(z)
        rates = s.learning_rates()
        beta1, beta2 = s.adam_betas
        timesteps = [np.full(n, t, dtype=np.int64) for t in self.chain.timesteps]
        for run in range(s.iterations):
            noise = draws.step_noise(run).reshape(s.num_steps, n, *self.image_shape)
            update = run < s.num_updates
            image, loss, grad = self.chain_pass(z, target, noise, timesteps, s, with_gradient=update)
            if update:
                z = self.steps.adam_update(z, grad, m, v, run + 1, rates[run], beta1, beta2)
        return image, loss, z

    def chain_pass(self, z, target, noise, timesteps, s: DefenseSettings, with_gradient: bool = True):
        """One run of the T* steps from z (N, 1, 28, 28) with the step noise (T*, N, 1, 28, 28): the images, the
        losses (N,) and, if asked, d loss / d z of every candidate, straight-through or full as s says."""
        full = s.gradient == "full"
        x, chain_inputs = self.run_chain(z, noise, timesteps)
        gain = 1.0 if full else self.gain  # full: d loss / d x_0, carried back through the chain below
        image, loss, grad = self.steps.loss_and_gradient(x, target, gain, s.output_map, with_gradient=with_gradient)
        if with_gradient and full:
            grad = self.backpropagate_chain(chain_inputs, timesteps, grad)
        return image, loss, grad

    def run_chain(self, z, noise, timesteps, coefficients=None):
        """x_0 on the model's scale from z, and the input of every step (for backpropagate_chain); coefficients:
        another chain's than the settings' (the refining pass's)."""
        coefficients = coefficients or self.coefficients
        x, chain_inputs = z, []
        for i in range(len(timesteps)):
            chain_inputs.append(x)
            eps = self.unet.run(x, timesteps[i])
            x = self.steps.reverse_step(x, eps, *coefficients[i], noise[i])
        return x, chain_inputs

    def _check_latents(self, latents: np.ndarray, batch: int) -> np.ndarray:
        """Initial latents as float32, or ValueError: real numbers of a sane size, shaped for this batch."""
        r = self.settings.num_candidates
        if (
            not isinstance(latents, np.ndarray)
            or latents.ndim != 5
            or latents.shape[0] != batch
            or not 1 <= latents.shape[1] <= r
            or latents.shape[2:] != self.image_shape
        ):
            got = latents.shape if isinstance(latents, np.ndarray) else type(latents).__name__
            raise ValueError(
                f"Expected initial latents shaped ({batch}, K, {', '.join(map(str, self.image_shape))}) with "
                f"1 <= K <= {r}, but got {got}."
            )
        # Complex ones would lose their imaginary part in the cast; bools, strings and objects are no latents.
        if latents.dtype.kind not in "fiu":
            raise ValueError(f"Expected initial latents of a real float or integer dtype, but got {latents.dtype}.")
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes infinity, refused below
            cast = latents.astype(np.float32)
        if not np.isfinite(cast).all():
            raise ValueError("Expected finite initial latents within float32's range, but they hold NaN or infinity.")
        largest = float(np.abs(cast).max())
        if largest > MAX_LATENT:
            raise ValueError(f"Expected initial latents of magnitude at most {MAX_LATENT:g}, but got {largest:g}.")
        return cast

    def backpropagate_chain(self, chain_inputs: list[np.ndarray], timesteps: list[np.ndarray], grad: np.ndarray):
        """d loss / d z from d loss / d x_0: each step x_{i-1} = a x_i + b eps(x_i) + s n passes the gradient
        g back as a g + b (d eps / d x_i)^T g, the U-Net's part from its exported vector-Jacobian graph."""
        for i in reversed(range(len(chain_inputs))):
            a, b, _ = self.coefficients[i]
            grad = a * grad + b * self.unet_vjp.run(chain_inputs[i], timesteps[i], grad)
        return grad

    def _chunking(self, max_batch: int | None, memory_budget: int | None) -> tuple[int | None, int | None]:
        """A call's max_batch and memory_budget, else the Defender's."""
        return (
            self.max_batch if max_batch is None else max_batch,
            self.memory_budget if memory_budget is None else memory_budget,
        )

    def __call__(
        self,
        images: np.ndarray,
        initial_latents: np.ndarray | None = None,
        iterations: int | None = None,
        *,
        max_batch: int | None = None,
        memory_budget: int | None = None,
    ) -> DefenseResult:
        """Defend and classify a batch; initial_latents and iterations as in reconstruct (a warm start), and
        max_batch and memory_budget too: a large batch is defended and classified in chunks that fit the budget
        (1 GiB unless told otherwise), with the results of one unchunked call, bit for bit."""
        images = check_images(images, self.image_shape)
        start = time.perf_counter()
        reconstruction = self.reconstruct(
            images, initial_latents, iterations, max_batch=max_batch, memory_budget=memory_budget
        )
        reconstructions, errors = reconstruction.images, reconstruction.errors
        defended = time.perf_counter()
        size = images_per_chunk(self.settings, self.image_shape, *self._chunking(max_batch, memory_budget))
        logits = [self.classifier.run(reconstructions[k : k + size]) for k in range(0, len(reconstructions), size)]
        probabilities = softmax(np.concatenate(logits).astype(np.float64))
        done = time.perf_counter()
        # The last line of defence: checked inputs can still overflow a model (an fp16 engine, say); NaN is no answer.
        outputs = (reconstructions, errors, probabilities, reconstruction.latents)
        if not all(np.isfinite(a).all() for a in outputs):
            raise ValueError(
                "Expected finite reconstructions, errors and probabilities, but the models gave NaN or infinity "
                "for this batch."
            )
        scores = compute_score(self.detection_score, images, reconstructions, errors)
        flags = scores > self.threshold if self.threshold is not None else np.zeros(len(scores), dtype=bool)
        return DefenseResult(
            labels=probabilities.argmax(axis=1),
            label_names=self.label_names,
            probabilities=probabilities,
            reconstructions=reconstructions,
            reconstruction_error=errors,
            detection_score=scores,
            attack_flag=flags,
            threshold=self.threshold,
            timings={"defense": defended - start, "classify": done - defended, "total": done - start},
            step_ops=self.step_ops_name,
            device_loop=self.device_loop is not None,
            latents=reconstruction.latents,
        )


def _detection_score(name: str | None, detection: DetectionRecord | None) -> str:
    if name is None:
        return detection.score if detection is not None else DEFAULT_DETECTION_SCORE
    if name not in DETECTION_SCORES:
        raise ValueError(f"Expected detection_score to be one of {DETECTION_SCORES} or None, but got {name!r}.")
    return name


def _bundle_threshold(
    detection: DetectionRecord | None, settings: DefenseSettings, score: str, precision: str
) -> float | None:
    """The bundle's calibrated threshold for this precision, which holds only for the settings and the score it was
    calibrated with."""
    if detection is None or detection.settings != settings or detection.score != score:
        return None
    return detection.threshold_for(precision)


def _backend_options(backend: BackendOptions | None, **keywords: object) -> BackendOptions:
    """backend, or BackendOptions from the Defender's older keyword arguments (those not None); never both."""
    given = {name: value for name, value in keywords.items() if value is not None}
    if backend is None:
        return BackendOptions(**given)
    if not isinstance(backend, BackendOptions):
        raise ValueError(f"Expected backend to be a BackendOptions or None, but got {backend!r}.")
    if given:
        raise ValueError(
            f"Expected the backend choice either as backend=BackendOptions(...) or as keyword arguments, but got "
            f"both: backend and {', '.join(sorted(given))}."
        )
    return backend


def _coefficients(chain) -> list[tuple[float, float, float]]:
    """Each step's (a, b, s) as Python floats: numpy float64 scalars would promote the float32 arrays to float64
    (NEP 50)."""
    return [(float(a), float(b), float(s)) for a, b, s in zip(chain.a, chain.b, chain.s, strict=True)]


def _default_precision(manifest, timesteps, provider: str, kernels, unet_graphs: str | None) -> str:
    """precision=None resolved as the Defender's docstring says: the bundle's default where it can run as asked."""
    chosen = manifest.default_precision
    runnable = provider == "cpu" and not kernels and unet_graphs in (None, "folded")
    if chosen == "float32" or not runnable:
        return "float32"
    return chosen if {int(t) for t in timesteps} <= set(manifest.folded_graphs(chosen)) else "float32"


def _unet_graphs(unet_graphs: str | None, precision: str, device_loop: bool) -> str:
    """The U-Net graph choice, with None resolved as the Defender's docstring says."""
    if precision not in PRECISIONS:
        raise ValueError(f"Expected precision {' or '.join(map(repr, PRECISIONS))}, but got {precision!r}.")
    if device_loop:
        if unet_graphs not in (None, "general") or precision != "float32":
            raise ValueError(
                "The device loop binds the general float32 U-Net graph; pass device_loop=False to run folded or "
                f"int8 graphs (got unet_graphs={unet_graphs!r}, precision={precision!r})."
            )
        return "general"
    if unet_graphs is None:
        return "auto" if precision == "float32" else "folded"
    return unet_graphs
