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

    error OnlyPool();
    /// The transaction did not carry enough gas to give the call `callGas`.
    error InsufficientCallGas();

    constructor() {
        pool = msg.sender;
    }

    /// @notice Calls `target` with `data`, no value and `callGas` gas; returns
    ///         whether the call succeeded. Its return data is not copied.
    ///         Reverts if the call may have had less than `callGas`: a relayer
    ///         must not be able to make the user's call fail by sending too little
    ///         gas and still keep the fee.
    function execute(address target, uint256 callGas, bytes calldata data) external returns (bool ok) {
        if (msg.sender != pool) revert OnlyPool();
        assembly ("memory-safe") {
            let m := mload(0x40)
            calldatacopy(m, data.offset, data.length)
            ok := call(callGas, target, 0, m, data.length, 0, 0)
        }
        // A call is given at most 63/64 of what is left (EIP-150). If it had less
        // than callGas, at most callGas / 63 can remain now; with more left, it
        // had all of callGas.
        if (gasleft() < callGas / 63) revert InsufficientCallGas();
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
///      * execution hash = keccak256(abi.encode(chainid, pool, target, callGas, keccak256(data))) mod r;
///      * tree: depth 20, empty leaf 0, nodes PoseidonT3(left, right).
///      Deposits insert their commitment at once. A spend writes one storage word:
///      `nullifiers[n]` becomes the change commitment, which marks the note spent and
///      leaves the change pending; `flush` inserts pending change notes and sets their
///      word to 1. Inserting a leaf costs twenty Poseidon hashes (~0.5 M gas), which
///      would otherwise dominate every paid relay. Every root the tree ever had is
///      accepted (the nullifier set prevents double spends whatever the root).
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

    uint256 internal constant SCALAR_MODULUS = SpendVerifier.SCALAR_MODULUS;
    uint256 internal constant MAX_LEAVES = 2 ** NoxTree.DEPTH;
    /// @dev `nullifiers[n]` of a spent note whose change note is in the tree.
    uint256 internal constant INSERTED = 1;

    /// @notice Executes relayed calls (see NoxExecutor).
    NoxExecutor public immutable executor;

    /// @notice Leaves inserted so far.
    uint256 public nextIndex;
    /// @notice The current root.
    uint256 public currentRoot;
    /// @notice Every root the tree has had.
    mapping(uint256 root => bool) public knownRoots;
    /// @notice 0: unspent; 1: spent, change note inserted; anything else: spent, and
    ///         this is the change commitment waiting for `flush`.
    mapping(uint256 nullifier => uint256) public nullifiers;
    /// @dev Left siblings on the path of the next leaf, by height.
    uint256[NOX_TREE_DEPTH] internal filledSubtrees;

    event Deposited(uint256 indexed commitment, uint256 asset, uint256 value, uint256 leafIndex);
    event Inserted(uint256 indexed commitment, uint256 leafIndex, uint256 root);
    event Withdrawn(
        uint256 indexed nullifier, address indexed recipient, uint256 asset, uint256 value, uint256 changeCommitment
    );
    event Relayed(
        uint256 indexed nullifier,
        address indexed relayer,
        uint256 asset,
        uint256 value,
        uint256 changeCommitment,
        address target,
        bool success
    );

    error ZeroValue();
    error ValueOverflow();
    error FieldOverflow();
    error BadAsset();
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

    constructor() {
        executor = new NoxExecutor();
        uint256 empty = NoxTree.zeros()[NoxTree.DEPTH];
        currentRoot = empty;
        knownRoots[empty] = true;
    }

    // ---------------------------------------------------------------- deposits

    /// @notice Deposits `msg.value` wei as a note whose `secret` is
    ///         Poseidon(owner, blinding). Returns the leaf index.
    function deposit(uint256 secret) external payable nonReentrant returns (uint256) {
        return _deposit(0, msg.value, secret);
    }

    /// @notice Deposits `amount` of `token` (approved beforehand). The note's value
    ///         is what the pool actually received.
    function depositERC20(IERC20 token, uint256 amount, uint256 secret) external nonReentrant returns (uint256) {
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        return _deposit(uint256(uint160(address(token))), token.balanceOf(address(this)) - before, secret);
    }

    function _deposit(uint256 asset, uint256 value, uint256 secret) internal returns (uint256 index) {
        if (value == 0) revert ZeroValue();
        if (value > type(uint128).max) revert ValueOverflow();
        if (secret >= SCALAR_MODULUS) revert FieldOverflow();
        uint256 commitment = PoseidonT4.hash(asset, value, secret);
        index = _insert(commitment);
        emit Deposited(commitment, asset, value, index);
    }

    // ------------------------------------------------------------------ spends

    /// @notice Withdraws `inputs.publicValue` of `inputs.asset` to `inputs.recipient`.
    ///         Anyone may submit it: the proof fixes the recipient.
    function withdraw(uint256[8] calldata proof, SpendInputs calldata inputs) external nonReentrant {
        if (inputs.executionHash != executionHash(address(0), 0, "")) revert WrongExecution();
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
    ///         recipient and bind exactly this target, gas and data. A call that
    ///         fails with its full gas does not undo the payment (the relayer paid
    ///         for the gas either way); a transaction too short of gas to give the
    ///         call its `callGas` reverts as a whole.
    function relay(
        uint256[8] calldata proof,
        SpendInputs calldata inputs,
        address target,
        uint256 callGas,
        bytes calldata data
    ) external nonReentrant returns (bool success) {
        if (target == address(0)) revert ZeroTarget();
        if (inputs.recipient != uint256(uint160(msg.sender))) revert WrongRelayer();
        if (inputs.executionHash != executionHash(target, callGas, data)) revert WrongExecution();
        _spend(proof, inputs);
        _pay(inputs.asset, msg.sender, inputs.publicValue);
        success = executor.execute(target, callGas, data);
        emit Relayed(
            inputs.nullifier, msg.sender, inputs.asset, inputs.publicValue, inputs.changeCommitment, target, success
        );
    }

    /// @notice keccak256(abi.encode(chainid, this pool, target, callGas, keccak256(data))) mod r.
    function executionHash(address target, uint256 callGas, bytes memory data) public view returns (uint256) {
        return
            uint256(keccak256(abi.encode(block.chainid, address(this), target, callGas, keccak256(data))))
                % SCALAR_MODULUS;
    }

    /// @notice Whether the note with this nullifier has been spent.
    function nullifierSpent(uint256 nullifier) external view returns (bool) {
        return nullifiers[nullifier] != 0;
    }

    /// @dev Checks the inputs and the proof, then marks the nullifier spent and its
    ///      change note pending, in one storage word.
    function _spend(uint256[8] calldata proof, SpendInputs calldata inputs) internal {
        if (inputs.publicValue > type(uint128).max) revert ValueOverflow();
        if (inputs.asset >> 160 != 0) revert BadAsset();
        if (!knownRoots[inputs.root]) revert UnknownRoot();
        if (nullifiers[inputs.nullifier] != 0) revert NullifierSpent();
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
        // A proven change commitment is a Poseidon output: neither 0 nor 1.
        nullifiers[inputs.nullifier] = inputs.changeCommitment;
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

    // ------------------------------------------------------------------- flush

    /// @notice Inserts the change notes of these spends (their nullifiers, from the
    ///         Withdrawn and Relayed events), in this order. Anyone may call it.
    ///         Entries with nothing pending (already flushed by someone else, or
    ///         never spent) are skipped, so one stale entry cannot sink a batch;
    ///         a call that inserts nothing reverts.
    function flush(uint256[] calldata spent) external nonReentrant {
        bool inserted;
        for (uint256 i; i < spent.length; ++i) {
            uint256 change = nullifiers[spent[i]];
            if (change <= INSERTED) continue;
            nullifiers[spent[i]] = INSERTED;
            _insert(change);
            inserted = true;
        }
        if (!inserted) revert NothingPending();
    }

    // -------------------------------------------------------------------- tree

    function _insert(uint256 leaf) internal returns (uint256 index) {
        index = nextIndex;
        if (index >= MAX_LEAVES) revert TreeFull();
        uint256[NOX_TREE_DEPTH + 1] memory zeros = NoxTree.zeros();
        uint256 node = leaf;
        for (uint256 h; h < NoxTree.DEPTH; ++h) {
            uint256 left;
            uint256 right;
            if ((index >> h) & 1 == 0) {
                filledSubtrees[h] = node;
                (left, right) = (node, zeros[h]);
            } else {
                (left, right) = (filledSubtrees[h], node);
            }
            // One call site: the hash is compiled into the pool once.
            node = PoseidonT3.hash(left, right);
        }
        nextIndex = index + 1;
        currentRoot = node;
        knownRoots[node] = true;
        emit Inserted(leaf, index, node);
    }
}
