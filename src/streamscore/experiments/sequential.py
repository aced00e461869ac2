"""Always-valid inference for the difference of two conversion rates: the mixture SPRT.

Johari, Pekelis, Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests",
Operations Research 70(3), 2022 (arXiv:1512.04922), the normal mixture for two-stream data:
for a difference estimate ``theta_hat`` with variance ``V``, mixing the likelihood
ratio of ``theta`` against ``theta0`` over ``theta ~ N(theta0, tau^2)`` gives, in closed form,

    Lambda_n(theta0) = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta0)^2 / (2 V (V + tau^2)))

a nonnegative martingale under ``theta = theta0``; by Ville's inequality it ever reaches
``1 / alpha`` with probability at most ``alpha``, whatever the (data-dependent) times at which it
is looked at. Hence

- the always-valid p-value ``p_n = min(1, min_{m <= n} 1 / Lambda_m(0))`` (a running minimum,
  so it never goes back up), significant when ``p_n <= alpha``;
- the always-valid confidence sequence: ``{theta0 : Lambda_m(theta0) < 1 / alpha}`` is
  ``theta_hat_m +- r_m`` with ``r_m = sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) +
  log((V + tau^2) / V)))``; the reported interval is the running intersection over ``m <= n``,
  which contains the true difference at every ``n`` simultaneously with probability
  ``>= 1 - alpha``. ``0`` leaves it exactly when ``p_n <= alpha`` (see `update` for the rare
  empty intersection).

Here ``theta`` is the treatment rate minus the control rate, ``theta_hat = x_t / n_t - x_c / n_c``
and, conversions being Bernoulli, the normal formula is applied through the central limit
theorem with the plug-in variance ``V = p_c (1 - p_c) / n_c + p_t (1 - p_t) / n_t``, the rates
smoothed to ``(x + 1) / (n + 2)`` (Agresti and Caffo 2000) so that ``V > 0`` at 0 or n
conversions. The guarantee is therefore asymptotic; the A/A simulations in the tests measure it.

``tau`` is the prior scale of the effects one expects (in rate units): ``Lambda`` at a fixed
estimate is largest when ``tau^2 = theta^2 - V``, so the test is quickest for effects of about
``tau`` and degrades slowly away from it. The default 0.01 (one percentage point) is the middle
of the conversion effects A/B tests look for (0.2 - 5 pp), not fitted to any one. Measured
median users to significance for 10 % vs 12 % (fixed-sample z-test at power 0.8: 7,682), looks
every 100 users: tau 0.002: 26,750; 0.005: 13,300; 0.01: 8,900; 0.02: 7,400; 0.05: 7,850;
0.1: 9,050.

>>> test = MixtureSPRT(alpha=0.05, tau=0.01)
>>> test.update(n_control=5_000, x_control=500, n_treatment=5_000, x_treatment=600)
>>> round(float(test.p_value), 5), bool(test.p_value <= 0.05)
(0.04807, True)
>>> lo, hi = test.interval
>>> bool(0 < lo < 0.02 < hi)
True
"""

from __future__ import annotations

import numpy as np

DEFAULT_TAU = 0.01
MIN_OUTCOMES = 10


def difference_and_variance(
    n_control: np.ndarray, x_control: np.ndarray, n_treatment: np.ndarray, x_treatment: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(treatment rate - control rate, its smoothed plug-in variance); needs n >= 1 in each arm."""
    nc = np.asarray(n_control, dtype=np.float64)
    nt = np.asarray(n_treatment, dtype=np.float64)
    xc = np.asarray(x_control, dtype=np.float64)
    xt = np.asarray(x_treatment, dtype=np.float64)
    pc = (xc + 1) / (nc + 2)
    pt = (xt + 1) / (nt + 2)
    return xt / nt - xc / nc, pc * (1 - pc) / nc + pt * (1 - pt) / nt


def log_likelihood_ratio(
    difference: np.ndarray, variance: np.ndarray, tau: float, theta0: float | np.ndarray = 0.0
) -> np.ndarray:
    """log Lambda(theta0) of the normal mixture N(theta0, tau^2), in closed form."""
    t2 = tau * tau
    total = variance + t2
    return 0.5 * np.log(variance / total) + t2 * (difference - theta0) ** 2 / (2 * variance * total)


def confidence_radius(variance: np.ndarray, tau: float, alpha: float) -> np.ndarray:
    """Half-width of {theta0 : Lambda(theta0) < 1 / alpha} around the estimate."""
    t2 = tau * tau
    total = variance + t2
    return np.sqrt(variance * total / t2 * (2 * np.log(1 / alpha) + np.log(total / variance)))


class MixtureSPRT:
    """Running mSPRT state; counts may be arrays (shape `shape`) to run many tests at once.

    `update` takes the current cumulative counts (users and conversions per arm); it may be
    called at any times, as often as wanted, without inflating the error rate. A look is skipped
    (changes nothing) until both arms have a user and the pooled users include `MIN_OUTCOMES`
    conversions and as many non-conversions: with ~0 conversions the plug-in variance is ~0 and
    the normal approximation would claim a near-exact difference of 0, which the running
    intersection would then keep forever. Skipping looks is itself a stopping rule, so Ville's
    bound, and with it the guarantee, is untouched.
    """

    def __init__(self, alpha: float = 0.05, tau: float = DEFAULT_TAU, shape: tuple = ()) -> None:
        if not 0 < alpha < 1 or not tau > 0:
            raise ValueError("alpha must be in (0, 1) and tau positive")
        self.alpha = alpha
        self.tau = tau
        self.log_lambda_max = np.zeros(shape)
        self.lower = np.full(shape, -1.0)
        self.upper = np.full(shape, 1.0)

    @classmethod
    def restore(
        cls, alpha: float, tau: float, log_lambda_max: float, lower: float, upper: float
    ) -> MixtureSPRT:
        test = cls(alpha, tau)
        test.log_lambda_max = np.asarray(log_lambda_max, dtype=np.float64)
        test.lower = np.asarray(lower, dtype=np.float64)
        test.upper = np.asarray(upper, dtype=np.float64)
        return test

    def update(
        self,
        n_control: np.ndarray,
        x_control: np.ndarray,
        n_treatment: np.ndarray,
        x_treatment: np.ndarray,
    ) -> None:
        converted = np.asarray(x_control) + np.asarray(x_treatment)
        not_converted = np.asarray(n_control) + np.asarray(n_treatment) - converted
        ready = (
            (np.asarray(n_control) > 0)
            & (np.asarray(n_treatment) > 0)
            & (converted >= MIN_OUTCOMES)
            & (not_converted >= MIN_OUTCOMES)
        )
        # Skipped looks get harmless placeholder counts so the masked arithmetic stays finite.
        diff, var = difference_and_variance(
            np.where(ready, n_control, 2),
            np.where(ready, x_control, 1),
            np.where(ready, n_treatment, 2),
            np.where(ready, x_treatment, 1),
        )
        log_lr = np.where(ready, log_likelihood_ratio(diff, var, self.tau), 0.0)
        self.log_lambda_max = np.maximum(self.log_lambda_max, log_lr)
        radius = confidence_radius(var, self.tau, self.alpha)
        lower = np.where(ready, np.maximum(self.lower, diff - radius), self.lower)
        upper = np.where(ready, np.minimum(self.upper, diff + radius), self.upper)
        # An empty intersection can only happen off the 1 - alpha event on which the sequence
        # covers, so any answer there keeps the guarantee; the midpoint of the gap between the
        # two intervals keeps "0 outside the interval" equivalent to "p <= alpha".
        middle = (lower + upper) / 2
        empty = lower > upper
        self.lower = np.where(empty, middle, lower)
        self.upper = np.where(empty, middle, upper)

    @property
    def p_value(self) -> np.ndarray:
        """Always-valid p-value for "no difference": min(1, running min of 1 / Lambda(0))."""
        return np.minimum(1.0, np.exp(-self.log_lambda_max))

    @property
    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Always-valid 1 - alpha confidence sequence for treatment - control."""
        return self.lower, self.upper
