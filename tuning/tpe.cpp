// The TPE sampler (tuning/tpe.h).
//
// Algorithm, per trial, as Optuna's TPESampler (v3/v4, default settings, univariate):
//  1. n = number of finished observations (completed or pruned). n < startup_trials:
//     random draw, the same as the random sampler.
//  2. Split: the best gamma(n) = min(ceil(0.1 n), 25) completed observations form the
//     "good" group (stable sort by objective, ties keep trial order); all other completed
//     ones and every pruned one form the "bad" group. Both keep trial order, which
//     matters for the weights: default_weights(m) is 1 for m < 25, otherwise a ramp from
//     1/m to 1 over the oldest m - 25 and 1 for the newest 25.
//  3. For each parameter, a Parzen estimator per group in the parameter's coordinate
//     (log for loguniform): one truncated Gaussian per observation plus a prior
//     (mean at the centre, sigma = the range, weight 1). An observation's sigma is the
//     larger gap to its sorted neighbours (the prior's mean counts as a neighbour, the
//     bounds do not: consider_endpoints=False), clipped to [range / min(100, m + 2), range]
//     (magic clip). Int parameters are the same on [low - step/2, high + step/2], their
//     density is a kernel's mass over [x - step/2, x + step/2] and samples are rounded to
//     the step grid (Optuna's discretisation). Choices: each observation's kernel puts
//     1 + 1/(m+1) on its choice and 1/(m+1) on every choice (normalised); the prior kernel
//     is uniform.
//  4. ei_candidates draws from the good estimator; the one with the largest
//     log l(x) - log g(x) wins (the same argmax as Optuna's acquisition function; the
//     first candidate wins ties).
//
// Differences from Optuna: (a) random numbers are counter-based draws
// uniform_draw(seed, trial, key, index) rather than a numpy RandomState, so the streams
// differ and nothing depends on how many numbers were drawn before; (b) pruned trials
// never enter the good group (Optuna puts the best pruned ones there, ranked by their
// last intermediate value, when fewer than gamma(n) trials completed); (c) an int
// parameter whose high is off its step grid uses the last grid value as high, like
// value_at does. Non-finite objectives count as failed, as in Optuna.
#include "tuning/tpe.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tessera::tuning {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kLogSqrt2Pi = 0.91893853320467274178;  // log(sqrt(2 pi))

int default_gamma(int n) { return std::min((int)std::ceil(0.1 * n), 25); }

std::vector<double> default_weights(int m) {
  if (m < 25) return std::vector<double>((size_t)m, 1.0);
  std::vector<double> w;
  const int ramp = m - 25;  // np.linspace(1/m, 1, num=m-25)
  for (int i = 0; i < ramp; i++)
    w.push_back(ramp == 1 ? 1.0 / m : 1.0 / m + (1.0 - 1.0 / m) * i / (ramp - 1));
  w.insert(w.end(), 25, 1.0);
  return w;
}

// Standard normal CDF and its log, accurate far into the lower tail (the asymptotic
// series below -20, where erfc underflows long before the log does).
double ndtr(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double log_ndtr(double x) {
  if (x > -20) return std::log(ndtr(x));
  const double x2 = x * x;
  const double series = 1 - 1 / x2 + 3 / (x2 * x2) - 15 / (x2 * x2 * x2);
  return -0.5 * x2 - std::log(-x) - kLogSqrt2Pi + std::log(series);
}

// log(Phi(b) - Phi(a)) for a <= b, computed on the side where it does not cancel.
double log_gauss_mass(double a, double b) {
  if (!(a < b)) return -kInf;
  if (b <= 0) {
    const double lb = log_ndtr(b), la = log_ndtr(a);
    return lb + std::log1p(-std::exp(la - lb));
  }
  if (a >= 0) return log_gauss_mass(-b, -a);
  return std::log1p(-ndtr(a) - ndtr(-b));
}

// Inverse of the standard normal CDF: Acklam's rational approximation, then one Halley
// step against erfc (relative error near machine precision).
double ndtri(double p) {
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01,  -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  p = std::clamp(p, 1e-300, 1 - 1e-16);
  double x;
  if (p < 0.02425 || p > 1 - 0.02425) {
    const double q = std::sqrt(-2 * std::log(p < 0.5 ? p : 1 - p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    if (p > 0.5) x = -x;
  } else {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  const double e = ndtr(x) - p;
  const double u = e * std::sqrt(2 * M_PI) * std::exp(0.5 * x * x);
  return x - u / (1 + 0.5 * x * u);
}

// A draw from N(mu, sigma) truncated to [low, high], by inverting the CDF with u in [0, 1).
double truncnorm_draw(double mu, double sigma, double low, double high, double u) {
  double a = (low - mu) / sigma, b = (high - mu) / sigma;
  const bool flip = a > 0;  // in the upper tail Phi(a) is 1 - tiny: work on the mirror
  if (flip) std::swap(a, b), a = -a, b = -b;
  const double pa = ndtr(a), pb = ndtr(b);
  double z = ndtri(pa + u * (pb - pa));
  if (flip) z = -z;
  return std::clamp(mu + sigma * z, low, high);
}

double logsumexp(const std::vector<double>& v) {
  double m = -kInf;
  for (double x : v) m = std::max(m, x);
  if (m == -kInf) return -kInf;
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}

// Mixture weights: default_weights over the observations, then the prior's 1.
std::vector<double> mixture_weights(size_t m) {
  std::vector<double> w = default_weights((int)m);
  w.push_back(1.0);  // prior_weight; with no observation the prior alone
  double sum = 0;
  for (double x : w) sum += x;
  for (double& x : w) x /= sum;
  return w;
}

// The index of the kernel u falls on (Optuna: rng.choice with p=weights).
size_t pick(const std::vector<double>& weights, double u) {
  double cum = 0;
  for (size_t k = 0; k + 1 < weights.size(); k++) {
    cum += weights[k];
    if (u < cum) return k;
  }
  return weights.size() - 1;
}

// A Parzen estimator of a numeric parameter in its coordinate space.
struct Numeric {
  std::vector<double> weight, mu, sigma;  // the observations' kernels, then the prior's
  double low = 0, high = 0, step = 0;     // step 0: continuous

  Numeric(const std::vector<double>& xs, double low_, double high_, double step_)
      : weight(mixture_weights(xs.size())), low(low_), high(high_), step(step_) {
    const double range = high - low + step;
    const double prior_mu = 0.5 * (low + high);
    // Sigma of each observation: the larger gap to its neighbours among the sorted
    // observations and the prior's mean; the first and last look inward only.
    std::vector<double> with_prior = xs;
    with_prior.push_back(prior_mu);
    std::vector<size_t> order(with_prior.size());
    for (size_t i = 0; i < order.size(); i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return with_prior[i] < with_prior[j]; });
    std::vector<double> ends;
    ends.push_back(low - step / 2);
    for (size_t i : order) ends.push_back(with_prior[i]);
    ends.push_back(high + step / 2);
    std::vector<double> sorted_sigma(order.size());
    for (size_t i = 0; i < order.size(); i++)
      sorted_sigma[i] = std::max(ends[i + 1] - ends[i], ends[i + 2] - ends[i + 1]);
    if (ends.size() >= 4) {  // consider_endpoints=False
      sorted_sigma.front() = ends[2] - ends[1];
      sorted_sigma.back() = ends[ends.size() - 2] - ends[ends.size() - 3];
    }
    std::vector<double> sig(order.size());
    for (size_t i = 0; i < order.size(); i++) sig[order[i]] = sorted_sigma[i];
    const double min_sigma = range / std::min(100.0, 1.0 + (double)xs.size() + 1.0);  // magic clip
    for (size_t i = 0; i < xs.size(); i++) {
      mu.push_back(xs[i]);
      sigma.push_back(std::clamp(sig[i], min_sigma, range));
    }
    mu.push_back(prior_mu);
    sigma.push_back(range);
  }

  double sample(double u_kernel, double u_value) const {
    const size_t k = pick(weight, u_kernel);
    const double x = truncnorm_draw(mu[k], sigma[k], low - step / 2, high + step / 2, u_value);
    if (step == 0) return x;
    return std::clamp(low + std::round((x - low) / step) * step, low, high);
  }

  double log_pdf(double x) const {
    std::vector<double> terms(weight.size());
    for (size_t k = 0; k < weight.size(); k++) {
      const double s = sigma[k];
      const double total = log_gauss_mass((low - step / 2 - mu[k]) / s, (high + step / 2 - mu[k]) / s);
      double lp;
      if (step == 0) {
        const double z = (x - mu[k]) / s;
        lp = -0.5 * z * z - kLogSqrt2Pi - std::log(s) - total;
      } else {
        lp = log_gauss_mass((x - step / 2 - mu[k]) / s, (x + step / 2 - mu[k]) / s) - total;
      }
      terms[k] = std::log(weight[k]) + lp;
    }
    return logsumexp(terms);
  }
};

// A Parzen estimator of a choice parameter: one row of choice probabilities per kernel.
struct Categorical {
  std::vector<double> weight;
  std::vector<std::vector<double>> rows;

  Categorical(const std::vector<int>& xs, size_t n_choices) : weight(mixture_weights(xs.size())) {
    const double base = 1.0 / (double)(xs.size() + 1);  // prior_weight / number of kernels
    for (int c : xs) {
      std::vector<double> row(n_choices, base);
      row[(size_t)c] += 1;
      for (double& v : row) v /= 1 + base * (double)n_choices;
      rows.push_back(std::move(row));
    }
    rows.emplace_back(n_choices, 1.0 / (double)n_choices);
  }

  int sample(double u_kernel, double u_value) const {
    const std::vector<double>& row = rows[pick(weight, u_kernel)];
    return (int)pick(row, u_value);
  }

  double log_pdf(int c) const {
    std::vector<double> terms(weight.size());
    for (size_t k = 0; k < weight.size(); k++) terms[k] = std::log(weight[k]) + std::log(rows[k][(size_t)c]);
    return logsumexp(terms);
  }
};

struct Split {
  std::vector<const Observation*> good, bad;  // each in trial order
};

Split split(const std::vector<const Observation*>& finished, bool maximize) {
  std::vector<const Observation*> completed;
  for (const Observation* o : finished)
    if (!o->pruned) completed.push_back(o);
  std::stable_sort(completed.begin(), completed.end(), [&](const Observation* x, const Observation* y) {
    return maximize ? *x->objective > *y->objective : *x->objective < *y->objective;
  });
  const size_t n_good = std::min(completed.size(), (size_t)default_gamma((int)finished.size()));
  Split s;
  for (const Observation* o : finished) {  // trial order
    const bool good = !o->pruned && std::find(completed.begin(), completed.begin() + (long)n_good, o) !=
                                         completed.begin() + (long)n_good;
    (good ? s.good : s.bad).push_back(o);
  }
  return s;
}

class TpeSampler : public Sampler {
 public:
  explicit TpeSampler(const SweepSpec& spec)
      : space_(spec.space), seed_(spec.sampler.seed), startup_(spec.sampler.startup_trials),
        candidates_(std::max(1, spec.sampler.ei_candidates)), maximize_(spec.objective.maximize) {}

  std::optional<Assignment> sample(int trial_id, const std::vector<Observation>& history) override {
    std::vector<const Observation*> finished;
    for (const Observation& o : history)
      if (o.pruned || (o.objective && std::isfinite(*o.objective))) finished.push_back(&o);
    Assignment a = nlohmann::json::object();
    if ((int)finished.size() < startup_) {
      for (const Param& p : space_) a[p.key] = value_at(p, uniform_draw(seed_, trial_id, p.key));
      return a;
    }
    const Split groups = split(finished, maximize_);
    for (const Param& p : space_) a[p.key] = sample_param(p, groups, trial_id);
    return a;
  }

 private:
  // Index 0 of a (trial, key) stream is the start-up draw; candidate j uses 1 + 2j (which
  // kernel) and 2 + 2j (where in it).
  double draw(int trial_id, const Param& p, uint64_t index) const {
    return uniform_draw(seed_, trial_id, p.key, index);
  }

  nlohmann::json sample_param(const Param& p, const Split& groups, int trial_id) const {
    if (p.dist == Distribution::choice) {
      const Categorical good(indices(p, groups.good), p.choices.size());
      const Categorical bad(indices(p, groups.bad), p.choices.size());
      int best = 0;
      double best_score = -kInf;
      for (int j = 0; j < candidates_; j++) {
        const int c = good.sample(draw(trial_id, p, 1 + 2 * (uint64_t)j), draw(trial_id, p, 2 + 2 * (uint64_t)j));
        const double score = good.log_pdf(c) - bad.log_pdf(c);
        if (j == 0 || score > best_score) best = c, best_score = score;
      }
      return p.choices[(size_t)best];
    }
    double low = p.low, high = p.high, step = 0;
    if (p.log_scale()) low = std::log(p.low), high = std::log(p.high);
    if (p.dist == Distribution::integer) step = (double)p.step, high = p.low + (double)((value_count(p) - 1) * p.step);
    const Numeric good(coordinates(p, groups.good, low, high), low, high, step);
    const Numeric bad(coordinates(p, groups.bad, low, high), low, high, step);
    double best = 0, best_score = -kInf;
    for (int j = 0; j < candidates_; j++) {
      const double x = good.sample(draw(trial_id, p, 1 + 2 * (uint64_t)j), draw(trial_id, p, 2 + 2 * (uint64_t)j));
      const double score = good.log_pdf(x) - bad.log_pdf(x);
      if (j == 0 || score > best_score) best = x, best_score = score;
    }
    if (p.dist == Distribution::integer) return (int64_t)std::llround(best);
    if (p.log_scale()) return std::clamp(std::exp(best), p.low, p.high);
    return best;
  }

  // The observations' coordinates of p, clamped into the bounds (a value from an
  // earlier version of the sweep file may lie outside); missing or unreadable values skipped.
  static std::vector<double> coordinates(const Param& p, const std::vector<const Observation*>& obs,
                                         double low, double high) {
    std::vector<double> xs;
    for (const Observation* o : obs) {
      if (!o->params.contains(p.key) || !o->params[p.key].is_number()) continue;
      const double v = o->params[p.key].get<double>();
      if (p.log_scale() && !(v > 0)) continue;
      xs.push_back(std::clamp(p.log_scale() ? std::log(v) : v, low, high));
    }
    return xs;
  }

  static std::vector<int> indices(const Param& p, const std::vector<const Observation*>& obs) {
    std::vector<int> xs;
    for (const Observation* o : obs) {
      if (!o->params.contains(p.key)) continue;
      for (size_t i = 0; i < p.choices.size(); i++)
        if (p.choices[i] == o->params[p.key]) xs.push_back((int)i);
    }
    return xs;
  }

  SearchSpace space_;
  uint64_t seed_;
  int startup_;
  int candidates_;
  bool maximize_;
};

}  // namespace

std::unique_ptr<Sampler> make_tpe_sampler(const SweepSpec& spec) { return std::make_unique<TpeSampler>(spec); }

}  // namespace tessera::tuning
