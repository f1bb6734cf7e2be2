#include "parallel/communicator.h"

namespace tessera {

namespace {

// Several requests as one: complete when all are.
class AllOf final : public CommRequestImpl {
 public:
  explicit AllOf(std::vector<CommRequest> requests) : requests_(std::move(requests)) {}
  void wait() override {
    for (CommRequest& r : requests_) r.wait();
  }
  bool test() override {
    for (CommRequest& r : requests_)
      if (!r.test()) return false;
    return true;
  }

 private:
  std::vector<CommRequest> requests_;
};

}  // namespace

CommRequest Communicator::exchange_async(const std::vector<PeerMessage>& messages) {
  std::vector<CommRequest> requests;
  for (const PeerMessage& m : messages)
    requests.push_back(m.send ? send_async(m.buf, m.count, m.peer, m.tag)
                              : recv_async(m.buf, m.count, m.peer, m.tag));
  return CommRequest(std::make_shared<AllOf>(std::move(requests)));
}

}  // namespace tessera
