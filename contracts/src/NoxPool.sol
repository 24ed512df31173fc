// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {PoseidonT3} from "./generated/PoseidonT3.sol";
import {PoseidonT4} from "./generated/PoseidonT4.sol";
import {NoxTree, NOX_TREE_DEPTH} from "./generated/NoxTree.sol";
import {SpendVerifier} from "./generated/SpendVerifier.sol";

/// @title NoxExecutor
/// @notice Performs the calls paid for through `NoxPool.relay`. The called
///         contract sees this executor as `msg.sender`: one shared address with
///         no funds, no approvals and no privileges, so a relayed call can never
///         act as the pool (move its tokens, say) and never identifies the user.
///         Anything sent to the executor can be taken by anyone's next call.
contract NoxExecutor {
    /// @notice The pool, the only caller.
    address public immutable pool;

    /// @dev Gas the CALL itself may take before it hands gas to the target: the
    ///      cold account access (2,600; no value, memory already expanded) and the
    ///      few instructions between the check and the call, with room to spare.
    uint256 internal constant CALL_RESERVE = 3000;

    error OnlyPool();
    /// The transaction did not carry enough gas to give the call `callGas`.
    error InsufficientCallGas();

    constructor() {
        pool = msg.sender;
    }

    /// @notice Calls `target` with `data`, no value and exactly `callGas` gas;
    ///         returns whether the call succeeded. Its return data is not copied.
    ///         Reverts before the call if fewer than `callGas` could reach the
    ///         target: a relayer must not be able to make the user's call fail (or
    ///         run with part of its gas) by sending too little and keep the fee.
    /// @dev EIP-150: a call is given at most all but one 64th of the gas left
    ///      after its own cost, so `callGas` reaches the target only if at least
    ///      callGas · 64/63 remain at the CALL. The check is made before the call,
    ///      not after it: a target that catches an inner call's out-of-gas cheaply
    ///      would otherwise pass an after-the-fact check with about half its gas.
    function execute(address target, uint256 callGas, bytes calldata data) external returns (bool ok) {
        if (msg.sender != pool) revert OnlyPool();
        bool enough;
        assembly ("memory-safe") {
            let m := mload(0x40)
            calldatacopy(m, data.offset, data.length)
            enough := iszero(lt(gas(), add(add(callGas, div(callGas, 63)), add(CALL_RESERVE, 1))))
            if enough { ok := call(callGas, target, 0, m, data.length, 0, 0) }
        }
        if (!enough) revert InsufficientCallGas();
    }
}

/// @title NoxPool
/// @notice The shielded pool behind NOX's gas payments. Deposits of ETH and
///         ERC-20 tokens become note commitments in an on-chain Poseidon Merkle
///         tree; a zero-knowledge proof of the spend circuit spends a note,
///         either to withdraw or to pay the exit node (`relay`) that submits a
///         user's call.
/// @dev Formulas (docs/protocol.md §11):
///      * commitment = PoseidonT4(asset, value, secret), secret = Poseidon(owner, blinding);
///      * execution hash = keccak256(abi.encode(chainid, pool, target, callGas, deadline, keccak256(data))) mod r;
///      * tree: depth 20, empty leaf 0, nodes PoseidonT3(left, right).
///
///      Insertion is batched. Every new leaf — a deposit's note, a spend's change
///      note — is *queued*: it gets its final leaf index at once, and the pool keeps
///      only a keccak chain of the queued leaves and their bounties (one storage word
///      per leaf, not twenty Poseidon hashes). `flush` inserts whole segments of queued leaves as
///      one batch, hashing each tree node once per batch: about 46 Poseidon for 32
///      leaves instead of 640. Segments end at multiples of `BATCH` leaves; the
///      segment still filling (the open one) can be flushed early by anyone, a
///      note's owner included, so no one can keep a note out of the tree.
///
///      Every queued leaf prepays its insertion: the transaction that queues it
///      sends at least `block.basefee × INSERT_GAS_PER_LEAF` wei (the exit's fee
///      covers it for relays), its bounty, which the chain records next to the leaf
///      and the flush that inserts it pays out, to the wei.
///
///      A queued note cannot be spent: no root contains it until it is flushed.
///      Every root the tree ever had is accepted (the nullifier set prevents double
///      spends whatever the root).
contract NoxPool is ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice The circuit's public inputs, in its order.
    struct SpendInputs {
        uint256 root;
        uint256 nullifier;
        uint256 changeCommitment;
        uint256 asset; // token address as an integer, 0 for ETH
        uint256 publicValue; // leaves the pool, at most 2^128 - 1
        uint256 recipient; // address as an integer: payee of a withdrawal, the relayer of a relay
        uint256 executionHash;
    }

    /// @dev What changes only at segment boundaries and flushes.
    struct Queue {
        uint32 nextIndex; // leaves in the tree
        uint32 openStart; // first leaf of the open segment
        uint32 openBlock; // no leaf of the open segment was queued before this block
    }

    uint256 internal constant SCALAR_MODULUS = SpendVerifier.SCALAR_MODULUS;
    uint256 internal constant MAX_LEAVES = 2 ** NoxTree.DEPTH;
    /// @notice Segments end at multiples of this many leaves: a full segment is an
    ///         aligned subtree of height 5.
    uint256 public constant BATCH = 32;
    /// @notice Gas each queued leaf prepays for its insertion, at the base fee of
    ///         the block that queues it: a leaf's share of a full batch's `flush`
    ///         (docs/protocol.md §11, measured by `scripts/bench-gas`).
    uint256 public constant INSERT_GAS_PER_LEAF = 40_000;
    /// @dev Low 32 bits of a chain word: a leaf index or a block number. A chain is
    ///      the upper 224 bits of keccak256(abi.encode(previous chain, leaf, bounty)).
    uint256 internal constant LOW32 = 0xffffffff;
    /// @dev The chain of an empty segment (not zero, so `head` is never cleared
    ///      and refilled).
    uint256 internal constant EMPTY_CHAIN = 1 << 32;

    /// @notice Executes relayed calls (see NoxExecutor).
    NoxExecutor public immutable executor;

    /// @dev The open segment's chain and, in the low 32 bits, the next leaf's
    ///      index: the one word each queued leaf writes.
    uint256 internal head;
    Queue internal queue;
    /// @dev Closed segments not yet inserted, by first leaf: their chain and, in
    ///      the low 32 bits, a block no leaf of theirs precedes.
    mapping(uint256 start => uint256) internal closedSegments;
    /// @notice The current root.
    uint256 public currentRoot;
    /// @notice Every root the tree has had.
    mapping(uint256 root => bool) public knownRoots;
    mapping(uint256 nullifier => bool) internal spent;
    /// @dev At each height, the complete left sibling of the next leaf's ancestor
    ///      when that ancestor is a right child (the only node of the height a
    ///      later batch reads).
    uint256[NOX_TREE_DEPTH] internal filledSubtrees;

    /// A leaf got its index and waits for a flush that pays `bounty` for it.
    /// `leafIndex` is indexed so that a flusher can fetch a segment's leaves.
    event Queued(uint256 indexed leafIndex, uint256 commitment, uint256 bounty);
    event Deposited(uint256 indexed commitment, uint256 asset, uint256 value, uint256 leafIndex);
    /// Leaves `firstIndex` to `firstIndex + count - 1` were inserted; `root` is the new root.
    event Flushed(uint256 indexed firstIndex, uint256 count, uint256 root, address flusher, uint256 bountyPaid);
    event Withdrawn(
        uint256 indexed nullifier, address indexed recipient, uint256 asset, uint256 value, uint256 changeCommitment
    );
    /// The change note is in the `Queued` event before it; the fee and the call
    /// are in the transaction's input.
    event Relayed(uint256 indexed nullifier, address indexed relayer, bool success);

    error ZeroValue();
    error ValueOverflow();
    error FieldOverflow();
    error BadAsset();
    /// Every leaf index is taken (inserted or queued): nothing more can be queued.
    error TreeFull();
    error UnknownRoot();
    error NullifierSpent();
    error InvalidProof();
    error WrongRelayer();
    error WrongRecipient();
    error WrongExecution();
    error ZeroTarget();
    error PaymentFailed();
    error NothingPending();
    /// The transaction sent less than the insertion bounty (`insertionBounty()`).
    error BountyTooLow(uint256 needed);
    /// The relay's deadline has passed.
    error Expired();
    /// The leaves (or bounties) given to `flush` are not the queued ones, or do not
    /// end at a segment's end.
    error WrongLeaves();

    constructor() {
        executor = new NoxExecutor();
        uint256 empty = NoxTree.zeros()[NoxTree.DEPTH];
        currentRoot = empty;
        knownRoots[empty] = true;
        head = EMPTY_CHAIN;
        queue.openBlock = uint32(block.number);
    }

    // ---------------------------------------------------------------- deposits

    /// @notice Deposits `value` wei as a note whose `secret` is
    ///         Poseidon(owner, blinding). `msg.value` is `value` plus the insertion
    ///         bounty (`insertionBounty()` at least). Returns the leaf index; the
    ///         note can be spent once a flush has inserted it.
    function deposit(uint256 value, uint256 secret) external payable nonReentrant returns (uint256) {
        if (msg.value < value) revert BountyTooLow(insertionBounty());
        return _deposit(0, value, secret, msg.value - value);
    }

    /// @notice Deposits `amount` of `token` (approved beforehand); `msg.value` is
    ///         the insertion bounty. The note's value is what the pool actually
    ///         received.
    function depositERC20(IERC20 token, uint256 amount, uint256 secret)
        external
        payable
        nonReentrant
        returns (uint256)
    {
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        return _deposit(uint256(uint160(address(token))), token.balanceOf(address(this)) - before, secret, msg.value);
    }

    function _deposit(uint256 asset, uint256 value, uint256 secret, uint256 bounty) internal returns (uint256 index) {
        if (value == 0) revert ZeroValue();
        if (value > type(uint128).max) revert ValueOverflow();
        if (secret >= SCALAR_MODULUS) revert FieldOverflow();
        uint256 commitment = PoseidonT4.hash(asset, value, secret);
        index = _enqueue(commitment, bounty);
        emit Deposited(commitment, asset, value, index);
    }

    // ------------------------------------------------------------------ spends

    /// @notice Withdraws `inputs.publicValue` of `inputs.asset` to `inputs.recipient`.
    ///         Anyone may submit it (the proof fixes the recipient), sending the
    ///         change note's insertion bounty as `msg.value`.
    function withdraw(uint256[8] calldata proof, SpendInputs calldata inputs) external payable nonReentrant {
        if (inputs.executionHash != executionHash(address(0), 0, 0, "")) revert WrongExecution();
        if (inputs.recipient >> 160 != 0) revert WrongRecipient();
        address recipient = address(uint160(inputs.recipient));
        _spend(proof, inputs);
        _pay(inputs.asset, recipient, inputs.publicValue);
        emit Withdrawn(inputs.nullifier, recipient, inputs.asset, inputs.publicValue, inputs.changeCommitment);
    }

    /// @notice Pays `inputs.publicValue` to the caller, the exit node relaying a
    ///         user's call, then performs the call: `target` is called with `data`,
    ///         no value and exactly `callGas` gas by the executor (the target sees
    ///         the executor as `msg.sender`). The proof must name the caller as
    ///         recipient and bind exactly this target, gas, deadline and data; the
    ///         relay is refused after `deadline` (a Unix time). `msg.value` is the
    ///         change note's insertion bounty. A call that fails with its full gas
    ///         does not undo the payment (the relayer paid for the gas either way);
    ///         a transaction too short of gas to give the call its `callGas`
    ///         reverts as a whole.
    function relay(
        uint256[8] calldata proof,
        SpendInputs calldata inputs,
        address target,
        uint256 callGas,
        uint256 deadline,
        bytes calldata data
    ) external payable nonReentrant returns (bool success) {
        if (target == address(0)) revert ZeroTarget();
        if (block.timestamp > deadline) revert Expired();
        if (inputs.recipient != uint256(uint160(msg.sender))) revert WrongRelayer();
        if (inputs.executionHash != executionHash(target, callGas, deadline, data)) revert WrongExecution();
        _spend(proof, inputs);
        _pay(inputs.asset, msg.sender, inputs.publicValue);
        success = executor.execute(target, callGas, data);
        emit Relayed(inputs.nullifier, msg.sender, success);
    }

    /// @notice keccak256(abi.encode(chainid, this pool, target, callGas, deadline, keccak256(data))) mod r.
    ///         A withdrawal's is executionHash(address(0), 0, 0, "").
    function executionHash(address target, uint256 callGas, uint256 deadline, bytes memory data)
        public
        view
        returns (uint256)
    {
        return uint256(keccak256(abi.encode(block.chainid, address(this), target, callGas, deadline, keccak256(data))))
            % SCALAR_MODULUS;
    }

    /// @notice Whether the note with this nullifier has been spent.
    function nullifierSpent(uint256 nullifier) external view returns (bool) {
        return spent[nullifier];
    }

    /// @dev Checks the inputs and the proof, marks the nullifier spent and queues
    ///      the change note with `msg.value` as its bounty.
    function _spend(uint256[8] calldata proof, SpendInputs calldata inputs) internal {
        if (inputs.publicValue > type(uint128).max) revert ValueOverflow();
        if (inputs.asset >> 160 != 0) revert BadAsset();
        if (!knownRoots[inputs.root]) revert UnknownRoot();
        if (spent[inputs.nullifier]) revert NullifierSpent();
        uint256[7] memory input = [
            inputs.root,
            inputs.nullifier,
            inputs.changeCommitment,
            inputs.asset,
            inputs.publicValue,
            inputs.recipient,
            inputs.executionHash
        ];
        if (!SpendVerifier.verify(proof, input)) revert InvalidProof();
        spent[inputs.nullifier] = true;
        _enqueue(inputs.changeCommitment, msg.value);
    }

    function _pay(uint256 asset, address to, uint256 value) internal {
        if (value == 0) return;
        if (asset == 0) {
            (bool ok,) = to.call{value: value}("");
            if (!ok) revert PaymentFailed();
        } else {
            // casting to 'uint160' is safe because _spend rejects assets of 2^160 and above
            // forge-lint: disable-next-line(unsafe-typecast)
            IERC20(address(uint160(asset))).safeTransfer(to, value);
        }
    }

    // ------------------------------------------------------------------- queue

    /// @notice Wei a transaction queueing one leaf must send now for its insertion.
    function insertionBounty() public view returns (uint256) {
        return block.basefee * INSERT_GAS_PER_LEAF;
    }

    /// @notice Leaves inserted so far (the next flush starts here).
    function nextIndex() external view returns (uint256) {
        return queue.nextIndex;
    }

    /// @notice The queue: leaves inserted, leaves inserted or queued, the open
    ///         segment's first leaf, and a block no leaf of it was queued before.
    function queueState()
        external
        view
        returns (uint256 inserted, uint256 queued, uint256 openStart, uint256 openBlock)
    {
        Queue memory q = queue;
        return (q.nextIndex, head & LOW32, q.openStart, q.openBlock);
    }

    /// @notice The segment that starts at leaf `start` and waits for a flush: its
    ///         end (exclusive) and a block none of its leaves was queued before.
    ///         `end` is 0 when no segment waiting for a flush starts there.
    function segment(uint256 start) external view returns (uint256 end, uint256 firstBlock) {
        Queue memory q = queue;
        uint256 queued = head & LOW32;
        if (start < q.nextIndex || start >= queued) return (0, 0);
        if (start == q.openStart) return (queued, q.openBlock);
        uint256 closed = closedSegments[start];
        if (closed == 0) return (0, 0);
        return ((start / BATCH + 1) * BATCH, closed & LOW32);
    }

    /// @dev The chain after `chain` with `leaf` and its `bounty`.
    function _link(uint256 chain, uint256 leaf, uint256 bounty) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(chain, leaf, bounty))) & ~LOW32;
    }

    /// @dev Gives `leaf` the next index and adds it, with its bounty, to the open
    ///      segment's chain; closes the segment at a multiple of BATCH.
    function _enqueue(uint256 leaf, uint256 bounty) internal returns (uint256 index) {
        if (bounty < insertionBounty()) revert BountyTooLow(insertionBounty());
        uint256 h = head;
        index = h & LOW32;
        if (index >= MAX_LEAVES) revert TreeFull();
        uint256 chain = _link(h & ~LOW32, leaf, bounty);
        uint256 next = index + 1;
        if (next % BATCH == 0) {
            Queue memory q = queue;
            closedSegments[q.openStart] = chain | q.openBlock;
            q.openStart = uint32(next);
            q.openBlock = uint32(block.number);
            queue = q;
            head = EMPTY_CHAIN | next;
        } else {
            head = chain | next;
        }
        emit Queued(index, leaf, bounty);
    }

    // ------------------------------------------------------------------- flush

    /// @notice Inserts queued leaves into the tree as one batch: `leaves` are the
    ///         queued leaves from `nextIndex()` on, in order, with the bounties
    ///         their `Queued` events name, covering whole segments (closed
    ///         segments end at multiples of BATCH; the open one ends at the last
    ///         queued leaf). Anyone may call it; the caller is paid the bounties.
    ///         Returns the new root.
    function flush(uint256[] calldata leaves, uint256[] calldata bounties)
        external
        nonReentrant
        returns (uint256 root)
    {
        Queue memory q = queue;
        uint256 start = q.nextIndex;
        if (start == head & LOW32) revert NothingPending();
        uint256 paid = _takeSegments(leaves, bounties, q);
        root = _insertBatch(leaves, start);
        q.nextIndex = uint32(start + leaves.length);
        queue = q;
        emit Flushed(start, leaves.length, root, msg.sender, paid);
        if (paid != 0) {
            (bool ok,) = msg.sender.call{value: paid}("");
            if (!ok) revert PaymentFailed();
        }
    }

    /// @dev Checks that `leaves` and `bounties` are the queued segments from
    ///      `q.nextIndex` on, whole, and takes them off the queue (the open
    ///      segment's start moves in `q`, the caller stores it). Returns the
    ///      bounties' sum.
    function _takeSegments(uint256[] calldata leaves, uint256[] calldata bounties, Queue memory q)
        internal
        returns (uint256 paid)
    {
        uint256 n = leaves.length;
        if (n == 0 || bounties.length != n) revert WrongLeaves();
        uint256 h = head;
        uint256 queued = h & LOW32;
        uint256 pos = q.nextIndex;
        uint256 i;
        while (i < n) {
            if (pos == queued) revert WrongLeaves();
            bool open = pos == q.openStart;
            uint256 end = open ? queued : (pos / BATCH + 1) * BATCH;
            if (end - pos > n - i) revert WrongLeaves();
            (uint256 chain, uint256 sum) = _chainOf(leaves, bounties, i, i + end - pos);
            paid += sum;
            if (open) {
                if (chain != h & ~LOW32) revert WrongLeaves();
                q.openStart = uint32(end);
                q.openBlock = uint32(block.number);
                head = EMPTY_CHAIN | queued;
            } else {
                uint256 closed = closedSegments[pos];
                if (closed == 0 || chain != closed & ~LOW32) revert WrongLeaves();
                delete closedSegments[pos];
            }
            i += end - pos;
            pos = end;
        }
    }

    /// @dev The chain of `leaves[from:to]` with their bounties, and the bounties' sum.
    function _chainOf(uint256[] calldata leaves, uint256[] calldata bounties, uint256 from, uint256 to)
        internal
        pure
        returns (uint256 chain, uint256 sum)
    {
        chain = EMPTY_CHAIN;
        for (uint256 i = from; i < to; ++i) {
            chain = _link(chain, leaves[i], bounties[i]);
            sum += bounties[i];
        }
    }

    // -------------------------------------------------------------------- tree

    /// @dev Appends `leaves` at positions `start`… and returns the new root. At
    ///      each height the nodes covering the batch are computed from the level
    ///      below, the frontier (left siblings) and the empty subtrees: about
    ///      2·n + DEPTH hashes for n leaves.
    function _insertBatch(uint256[] calldata leaves, uint256 start) internal returns (uint256 root) {
        uint256 n = leaves.length;
        uint256[] memory nodes = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            nodes[i] = leaves[i];
        }
        uint256[NOX_TREE_DEPTH + 1] memory zeros = NoxTree.zeros();
        uint256 lo = start;
        uint256 hi = start + n - 1;
        for (uint256 h; h < NoxTree.DEPTH; ++h) {
            // Read the left sibling of an odd first node before the frontier moves.
            uint256 leftOfFirst = lo & 1 == 1 ? filledSubtrees[h] : 0;
            // Keep the one node a later batch reads at this height: the left sibling of the
            // next leaf's ancestor, when that ancestor is a right child. It is complete, and
            // if this batch computed it, it is stored now (nodes still filling are not: the
            // batch that fills them recomputes them).
            uint256 next = (start + n) >> h;
            if (next & 1 == 1 && next - 1 >= lo) filledSubtrees[h] = nodes[next - 1 - lo];
            uint256 plo = lo >> 1;
            uint256 phi = hi >> 1;
            for (uint256 p = plo; p <= phi; ++p) {
                uint256 l = 2 * p;
                uint256 left = l >= lo ? nodes[l - lo] : leftOfFirst;
                uint256 right = l + 1 <= hi ? nodes[l + 1 - lo] : zeros[h];
                // One call site: the hash is linked into the pool once.
                nodes[p - plo] = PoseidonT3.hash(left, right);
            }
            lo = plo;
            hi = phi;
        }
        root = nodes[0];
        currentRoot = root;
        knownRoots[root] = true;
    }
}
